package ws_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/wsframe"
	"github.com/heraldpush/herald/transport/ws"
)

// The extension response every offer of permessage-deflate gets.
const wantExtensions = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// Offers of permessage-deflate as clients send them.
const (
	offerChromium = "permessage-deflate; client_max_window_bits" // Chromium, and Firefox
	offerNodeWS   = "permessage-deflate; client_max_window_bits" // npm ws 8
	offerCoder    = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
)

// rawDialExt does a raw handshake offering extensions (none if empty) and
// returns the connection and the extensions the server took.
func (e *env) rawDialExt(t testing.TB, extensions string) (*rawConn, string) {
	t.Helper()
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if extensions != "" {
		req += "Sec-WebSocket-Extensions: " + extensions + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	r := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d", resp.StatusCode)
	}
	return r, resp.Header.Get("Sec-WebSocket-Extensions")
}

// compressedFrame encodes a masked client text frame with RSV1 set whose
// payload is p as it stands (a DEFLATE stream, or anything).
func compressedFrame(p []byte) []byte {
	f := clientFrame(0x1, p)
	f[0] |= 0x40
	return f
}

// deflate compresses msg as a permessage-deflate payload: a DEFLATE stream
// flushed at a byte boundary, less the 00 00 ff ff that ends it.
func deflate(t testing.TB, msg []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(msg)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	p, ok := bytes.CutSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	if !ok {
		t.Fatal("a flushed DEFLATE stream does not end with 00 00 ff ff")
	}
	return p
}

// inflate decodes a permessage-deflate payload (RFC 7692 section 7.2.2).
func inflate(p []byte) ([]byte, error) {
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff")))
	b, err := io.ReadAll(r)
	if err == io.ErrUnexpectedEOF {
		err = nil // the stream ends at the flush, not with a final block
	}
	return b, err
}

// wireFrame is a server frame as it came: its first byte, its length on
// the wire and its payload, inflated if RSV1 was set.
type wireFrame struct {
	b0   byte
	size int
	raw  []byte // the payload as sent
	msg  []byte
}

// readWire reads the next data frame, skipping pings; a close frame is
// returned with its payload.
func (r *rawConn) readWire() wireFrame {
	r.t.Helper()
	for {
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b0, masked, p, err := wsframe.ReadFrame(r.br, 16<<20)
		if err != nil {
			r.t.Fatalf("raw read: %v", err)
		}
		if masked {
			r.t.Fatal("server frame is masked")
		}
		if b0&0x0F == wsframe.OpPing {
			continue
		}
		f := wireFrame{b0: b0, size: len(wsframe.AppendHeader(nil, b0, false, len(p))) + len(p), raw: p, msg: p}
		if b0&0x40 != 0 {
			if f.msg, err = inflate(p); err != nil {
				r.t.Fatalf("a compressed frame does not inflate: %v", err)
			}
		}
		return f
	}
}

// closeCode reads until the server's close frame and returns its code.
func (r *rawConn) closeCode() int {
	r.t.Helper()
	for {
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b0, _, p, err := wsframe.ReadFrame(r.br, 16<<20)
		if err != nil {
			r.t.Fatalf("no close frame: %v", err)
		}
		if b0&0x0F == wsframe.OpClose {
			if len(p) < 2 {
				return 1005
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

// dashboardEvent is a realistic dashboard event's data (2-4 KB of JSON).
func dashboardEvent(seq int) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(ws.DashboardData(seq), &m); err != nil {
		panic(err)
	}
	return m
}

// TestCompressionNegotiation checks the extension the server answers each
// client's offer with, with compression on and off.
func TestCompressionNegotiation(t *testing.T) {
	on := newEnv(t, envOptions{})
	off := newEnv(t, envOptions{ws: ws.Options{NoCompression: true}})
	for _, c := range []struct{ name, offer string }{
		{"Chromium", offerChromium}, {"npm ws", offerNodeWS}, {"coder/websocket", offerCoder},
		{"several offers", "permessage-deflate; server_max_window_bits=10, permessage-deflate"},
	} {
		if _, got := on.rawDialExt(t, c.offer); got != wantExtensions {
			t.Errorf("%s's offer %q: extensions %q, want %q", c.name, c.offer, got, wantExtensions)
		}
		if _, got := off.rawDialExt(t, c.offer); got != "" {
			t.Errorf("with compression off, %s's offer got extensions %q", c.name, got)
		}
	}
	if _, got := on.rawDialExt(t, ""); got != "" {
		t.Errorf("no offer got extensions %q", got)
	}
	// A smaller window than 15 bits cannot be honoured: declined.
	if _, got := on.rawDialExt(t, "permessage-deflate; server_max_window_bits=10"); got != "" {
		t.Errorf("an offer of a 10-bit window got extensions %q", got)
	}
}

// TestCompressedEvents subscribes raw clients that negotiated
// permessage-deflate and one that did not, and publishes events under and
// over the threshold: every client gets every event intact; a large one
// comes compressed (RSV1, a DEFLATE payload less its 00 00 ff ff) to those
// that negotiated it, in the same bytes for each, and a small one plain.
// The stats op counts what each connection was sent.
func TestCompressedEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	var deflating [3]*rawConn
	for i := range deflating {
		deflating[i], _ = e.rawDialExt(t, offerChromium)
	}
	plain, _ := e.rawDialExt(t, "")
	all := append(deflating[:], plain)
	for _, r := range all {
		if _, err := r.nc.Write(textFrame(`{"op":"subscribe","ref":"s","topics":["dash.>"]}`)); err != nil {
			t.Fatal(err)
		}
		if f := r.readText(); f.Op != "ok" {
			t.Fatalf("subscribe: %s", f)
		}
	}
	events := []any{"small", dashboardEvent(1), map[string]any{"pad": strings.Repeat("ab", 300)}, dashboardEvent(2), 7}
	var msgs []*hub.Message
	for _, d := range events {
		msgs = append(msgs, e.publish("dash.host", d))
	}
	type counts struct{ events, wire, plain int }
	var want [4]counts
	for i, m := range msgs {
		var first []byte
		for j, r := range all {
			f := r.readWire()
			var got frame
			if err := json.Unmarshal(f.msg, &got); err != nil || got.Op != "event" || got.ID != m.ID.String() || string(got.Data) != string(m.Data) {
				t.Fatalf("event %d on client %d: %s (%v)", i, j, abbrev(f.msg), err)
			}
			compressed := f.b0&0x40 != 0
			if wantDeflate := j < len(deflating) && len(m.Envelope()) >= 512; compressed != wantDeflate {
				t.Fatalf("event %d (%d-byte envelope) on client %d: compressed %v, want %v", i, len(m.Envelope()), j, compressed, wantDeflate)
			}
			if compressed {
				if first == nil {
					first = f.raw
				} else if !bytes.Equal(f.raw, first) {
					t.Fatalf("event %d: clients got different compressed frames", i)
				}
				if f.size > len(f.msg)/2 {
					t.Errorf("event %d: compressed to %d bytes of %d", i, f.size, len(f.msg))
				}
			}
			want[j].events++
			want[j].wire += f.size
			want[j].plain += len(wsframe.AppendHeader(nil, 0x81, false, len(f.msg))) + len(f.msg)
		}
	}
	for j, r := range all {
		if _, err := r.nc.Write(textFrame(`{"op":"stats","ref":9}`)); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Op     string `json:"op"`
			Ref    int    `json:"ref"`
			Events int    `json:"events"`
			Wire   int    `json:"wire_bytes"`
			Bytes  int    `json:"bytes"`
		}
		f := r.readWire()
		if err := json.Unmarshal(f.msg, &got); err != nil || got.Op != "stats" || got.Ref != 9 {
			t.Fatalf("stats reply %s (%v)", f.msg, err)
		}
		if c := (counts{got.Events, got.Wire, got.Bytes}); c != want[j] {
			t.Errorf("client %d: stats %+v, want %+v (what it received)", j, c, want[j])
		}
		t.Logf("client %d: %d events, %d bytes on the wire, %d uncompressed", j, got.Events, got.Wire, got.Bytes)
	}
	if want[0].wire >= want[0].plain || want[3].wire != want[3].plain {
		t.Errorf("compressed %+v, plain %+v", want[0], want[3])
	}
}

// TestCompressedEventsToCoderClient checks that a coder/websocket client
// with compression receives exactly the events published, and that its
// compressed messages (publish, subscribe, ping) are read.
func TestCompressedEventsToCoderClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(&websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover, CompressionThreshold: 1})
	sub := map[string]any{"op": "subscribe", "ref": "sub", "topics": []string{"dash.>"}, "pad": strings.Repeat(" ", 600)}
	c.send(sub)
	c.expect("ok")
	var sent []string
	for i := range 20 {
		var d any = dashboardEvent(i)
		if i%3 == 0 {
			d = i
		}
		b, _ := json.Marshal(d)
		sent = append(sent, string(b))
		c.send(map[string]any{"op": "publish", "ref": i, "topic": "dash.h", "data": d})
	}
	events, oks := 0, 0
	for events < len(sent) || oks < len(sent) {
		f := c.recv()
		switch f.Op {
		case "ok":
			oks++
		case "event":
			if string(f.Data) != sent[events] {
				t.Fatalf("event %d: %s, want %s", events, abbrev(f.Data), abbrev([]byte(sent[events])))
			}
			events++
		default:
			t.Fatalf("unexpected %s", f)
		}
	}
	c.roundTrip("after")
}

// TestCompressionOff checks that with NoCompression a client that offers
// permessage-deflate gets no extension and plain frames.
func TestCompressionOff(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{NoCompression: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPClient: e.http, CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != "" {
		t.Fatalf("extensions %q with compression off", got)
	}
	r, _ := e.rawDialExt(t, offerChromium)
	if _, err := r.nc.Write(textFrame(`{"op":"subscribe","topics":["a"]}`)); err != nil {
		t.Fatal(err)
	}
	r.readWire()
	e.publish("a", dashboardEvent(1))
	if f := r.readWire(); f.b0 != 0x81 {
		t.Fatalf("with compression off, an event came in a frame beginning %#x", f.b0)
	}
}

// TestRSV1WithoutNegotiationCloses1002: a compressed frame on a connection
// that did not negotiate permessage-deflate is a protocol error.
func TestRSV1WithoutNegotiationCloses1002(t *testing.T) {
	for _, name := range []string{"compression on", "compression off"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{ws: ws.Options{NoCompression: name == "compression off"}})
			r, _ := e.rawDialExt(t, "")
			if _, err := r.nc.Write(compressedFrame(deflate(t, []byte(`{"op":"ping"}`)))); err != nil {
				t.Fatal(err)
			}
			if code := r.closeCode(); code != 1002 {
				t.Fatalf("close code %d, want 1002", code)
			}
		})
	}
}

// TestInvalidDeflateCloses1007: a compressed frame whose payload does not
// inflate closes the connection with 1007, as invalid payload data.
func TestInvalidDeflateCloses1007(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, p := range [][]byte{
		{0xff, 0xff, 0xff, 0xff},      // block type 3, reserved
		{0x04, 0x01, 0x02, 0x03},      // a dynamic block with impossible code lengths
		{0x00, 0x05, 0x00, 0x00, 'x'}, // a stored block whose length and its complement disagree
	} {
		r, _ := e.rawDialExt(t, offerChromium)
		if _, err := r.nc.Write(compressedFrame(p)); err != nil {
			t.Fatal(err)
		}
		if code := r.closeCode(); code != 1007 {
			t.Errorf("payload % x: close code %d, want 1007", p, code)
		}
	}
}

// TestDecompressionBombCloses1009: the read limit counts inflated bytes, so
// a 1 KB frame that inflates past it closes the connection with 1009.
func TestDecompressionBombCloses1009(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{ReadLimit: 64 << 10}})
	r, _ := e.rawDialExt(t, offerChromium)
	bomb := deflate(t, []byte(`{"op":"ping","ref":"`+strings.Repeat("a", 10<<20)+`"}`))
	if len(bomb) > 16<<10 {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	if _, err := r.nc.Write(compressedFrame(bomb)); err != nil {
		t.Fatal(err)
	}
	if code := r.closeCode(); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
	// Compressed bytes alone over the limit: 1009 before any inflating.
	r, _ = e.rawDialExt(t, offerChromium)
	if _, err := r.nc.Write(compressedFrame(make([]byte, 65<<10))); err != nil {
		t.Fatal(err)
	}
	if code := r.closeCode(); code != 1009 {
		t.Fatalf("a compressed frame over the limit: close code %d, want 1009", code)
	}
	// Under the limit, the same kind of message is read.
	r, _ = e.rawDialExt(t, offerChromium)
	if _, err := r.nc.Write(compressedFrame(deflate(t, []byte(`{"op":"ping","ref":"`+strings.Repeat("a", 60<<10)+`"}`)))); err != nil {
		t.Fatal(err)
	}
	if f := r.readText(); f.Op != "pong" {
		t.Fatalf("a compressed ping under the limit: %s", f)
	}
}

// TestPingsInsideCompressedMessageBounded opens a compressed message and
// never ends it, sending pings instead: they wait for the message's end,
// so past the read limit the connection closes with 1009, and a few of
// them inside a message that ends are all answered.
func TestPingsInsideCompressedMessageBounded(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := deflate(t, []byte(`{"op":"ping","ref":"r"}`))
	head := clientFrame(0x1, p[:4])
	head[0] = 0x40 | 0x1 // not FIN
	ping := clientFrame(0x9, bytes.Repeat([]byte("p"), 125))

	r, _ := e.rawDialExt(t, offerChromium)
	b := append([]byte{}, head...)
	for range 64<<10/len(ping) + 1 {
		b = append(b, ping...)
	}
	go func() { _, _ = r.nc.Write(b) }() // the server may close before reading it all
	if code := r.closeCode(); code != 1009 {
		t.Fatalf("pings past the read limit inside a message: close code %d, want 1009", code)
	}

	r, _ = e.rawDialExt(t, offerChromium)
	b = append([]byte{}, head...)
	for range 8 {
		b = append(b, ping...)
	}
	b = append(b, clientFrame(0x0, p[4:])...)
	if _, err := r.nc.Write(b); err != nil {
		t.Fatal(err)
	}
	pongs := 0
	for pongs < 8 {
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b0, _, payload, err := wsframe.ReadFrame(r.br, 1<<20)
		if err != nil {
			t.Fatalf("after %d pongs: %v", pongs, err)
		}
		if b0&0x0F != wsframe.OpPong {
			t.Fatalf("frame %#x %q before the 8 pongs", b0, payload)
		}
		pongs++
	}
	if f := r.readText(); f.Op != "pong" || string(f.Ref) != `"r"` {
		t.Fatalf("the message after its pings: %s", f)
	}
}

// TestCompressedClientMessages sends raw compressed messages: subscribe
// and publish (in one frame, and fragmented), each read as its inflated
// text, beside plain ones on the same connection.
func TestCompressedClientMessages(t *testing.T) {
	e := newEnv(t, envOptions{})
	r, _ := e.rawDialExt(t, offerChromium)
	send := func(b []byte) {
		t.Helper()
		if _, err := r.nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	send(compressedFrame(deflate(t, []byte(`{"op":"subscribe","ref":"s","topics":["c.>"]}`))))
	if f := r.readText(); f.Op != "ok" || string(f.Ref) != `"s"` {
		t.Fatalf("compressed subscribe: %s", f)
	}
	send(compressedFrame(deflate(t, []byte(`{"op":"publish","ref":1,"topic":"c.a","data":"one"}`))))
	send(textFrame(`{"op":"publish","ref":2,"topic":"c.a","data":"two"}`))
	// Fragmented: RSV1 on the first frame only (RFC 7692 section 6.1),
	// with a ping between the fragments, answered.
	p := deflate(t, []byte(`{"op":"publish","ref":3,"topic":"c.a","data":"three"}`))
	first := clientFrame(0x1, p[:len(p)/2])
	first[0] = 0x40 | 0x1 // not FIN
	rest := clientFrame(0x0, p[len(p)/2:])
	send(append(append(first, clientFrame(0x9, []byte("between"))...), rest...))
	want := []string{`"one"`, `"two"`, `"three"`}
	pong := false
	for got := 0; got < len(want) || !pong; {
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b0, _, payload, err := wsframe.ReadFrame(r.br, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if b0&0x0F == wsframe.OpPong {
			pong = string(payload) == "between"
			continue
		}
		f := parseFrame(t, payload)
		switch f.Op {
		case "ok":
		case "event":
			if string(f.Data) != want[got] {
				t.Fatalf("event %d: %s, want %s", got, f.Data, want[got])
			}
			got++
		default:
			t.Fatalf("unexpected %s", f)
		}
	}
}

// TestCompressedFramingErrorsClose1002 breaks RFC 7692's framing inside a
// compressed message: RSV1 on a continuation frame, a new text frame before
// the message ended, RSV1 on a control frame. Each closes with 1002.
func TestCompressedFramingErrorsClose1002(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := deflate(t, []byte(`{"op":"ping","ref":"a-somewhat-longer-ref"}`))
	head := clientFrame(0x1, p[:4])
	head[0] = 0x40 | 0x1 // not FIN
	rsvCont := clientFrame(0x0, p[4:])
	rsvCont[0] |= 0x40
	ping := clientFrame(0x9, nil)
	ping[0] |= 0x40
	for name, b := range map[string][]byte{
		"RSV1 on a continuation":  append(append([]byte{}, head...), rsvCont...),
		"a new message inside":    append(append([]byte{}, head...), textFrame(`{"op":"ping"}`)...),
		"RSV1 on a control frame": ping,
	} {
		r, _ := e.rawDialExt(t, offerChromium)
		if _, err := r.nc.Write(b); err != nil {
			t.Fatal(err)
		}
		if code := r.closeCode(); code != 1002 {
			t.Errorf("%s: close code %d, want 1002", name, code)
		}
	}
}

// FuzzCompressedFrame sends a frame with RSV1 set and an arbitrary payload,
// whole or in two fragments (with a ping between them when split's high
// bit is set), on a connection that negotiated
// permessage-deflate, then a plain ping: corkConn's inflating reader
// (inflate.go) under coder/websocket. The server must either answer the
// ping (the payload inflated to some message) or close the connection with
// 1002, 1007 or 1009, and never crash or hang.
//
// Run long with: go test -run '^$' -fuzz FuzzCompressedFrame -fuzztime 10m ./transport/ws/
func FuzzCompressedFrame(f *testing.F) {
	f.Add([]byte{0xff, 0xff}, uint8(0))
	f.Add(deflate(f, []byte(`{"op":"ping","ref":1}`)), uint8(0))
	f.Add(deflate(f, []byte(`{"op":"ping","ref":1}`)), uint8(3))
	f.Add(deflate(f, []byte(`{"op":"ping","ref":1}`)), uint8(0x85))
	f.Add(deflate(f, []byte("\xff\xfe not UTF-8")), uint8(0))
	f.Add(deflate(f, bytes.Repeat([]byte("a"), 70000)), uint8(0))
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff}, uint8(1)) // a final stored block, then more
	e := newEnv(f, envOptions{ws: ws.Options{MessageRate: -1, PingInterval: -1, ReadLimit: 64 << 10}})
	f.Fuzz(func(t *testing.T, p []byte, split uint8) {
		if len(p) > 4000 {
			return // the reader's paths are all reached by short payloads; keep each run quick
		}
		r, ext := e.rawDialExt(t, offerChromium)
		if ext != wantExtensions {
			t.Fatalf("extensions %q", ext)
		}
		var b []byte
		if cut := int(split & 0x7F); cut > 0 && cut < len(p) {
			first := clientFrame(0x1, p[:cut])
			first[0] = 0x40 | 0x1
			b = first
			if split&0x80 != 0 {
				b = append(b, clientFrame(0x9, []byte("between"))...)
			}
			b = append(b, clientFrame(0x0, p[cut:])...)
		} else {
			b = compressedFrame(p)
		}
		b = append(b, textFrame(`{"op":"ping","ref":"sentinel"}`)...)
		if _, err := r.nc.Write(b); err != nil {
			t.Fatal(err)
		}
		for {
			_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			b0, _, payload, err := wsframe.ReadFrame(r.br, 16<<20)
			if err != nil {
				t.Fatalf("after % x: no answer and no close frame: %v", p, err)
			}
			switch b0 & 0x0F {
			case wsframe.OpClose:
				code := 0
				if len(payload) >= 2 {
					code = int(binary.BigEndian.Uint16(payload))
				}
				if code != 1002 && code != 1007 && code != 1009 {
					t.Fatalf("after % x: close code %d (%q)", p, code, payload)
				}
				return
			case wsframe.OpText:
				if bytes.Contains(payload, []byte(`"sentinel"`)) {
					return
				}
			}
		}
	})
}
