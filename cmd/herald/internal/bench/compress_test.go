package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/flate"

	"github.com/heraldpush/herald/internal/wsframe"
)

// coderServer is a WebSocket server built on coder/websocket with the given
// compression: it answers the client's subscribe with an ok, then writes
// msgs with Conn.Write, each as one message, and waits for the client to go.
func coderServer(t *testing.T, mode websocket.CompressionMode, threshold int, msgs [][]byte) string {
	t.Helper()
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:         []string{"herald.v1"},
			CompressionMode:      mode,
			CompressionThreshold: threshold,
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if _, sub, err := c.Read(ctx); err != nil || !bytes.Contains(sub, []byte(`"op":"subscribe"`)) {
			return
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"ok","ref":1}`)); err != nil {
			return
		}
		for _, m := range msgs {
			if err := c.Write(ctx, websocket.MessageText, m); err != nil {
				return
			}
		}
		_, _, _ = c.Read(ctx) // until the client closes
	}))
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return srv.URL
}

// noise is n bytes of hex that compress about two to one.
func noise(n int, seed uint64) []byte {
	b := make([]byte, 0, n+16)
	for i := uint64(0); len(b) < n; i++ {
		b = fmt.Appendf(b, "%016x", mix64(seed+i))
	}
	return b[:n]
}

// The client offers permessage-deflate, coder/websocket accepts it without
// context takeover, and every message, compressed or sent plain below the
// server's threshold, arrives as it was written; the kernel counts far
// fewer bytes than the messages hold.
func TestInflateFromCoderWebSocket(t *testing.T) {
	dash := appendDashboard(nil, 3, 100, 4711, time.Now().UnixNano())
	big := append([]byte(`{"big":"`), noise(300_000, 7)...) // compressed, still over the 64 KiB read buffer
	big = append(big, `"}`...)
	msgs := [][]byte{
		[]byte(`{"op":"event","small":1}`), // under the threshold: plain, RSV1 clear
		dash,
		bytes.Repeat([]byte(`{"same":"again"}`), 4000),
		big,
		[]byte(`{"op":"event","small":2}`),
	}
	for _, m := range msgs[1:4] {
		if len(m) < 512 {
			t.Fatalf("message of %d bytes under the threshold", len(m))
		}
	}
	url := coderServer(t, websocket.CompressionNoContextTakeover, 512, msgs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialWS(ctx, &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize, deflate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.deflate {
		t.Fatal("permessage-deflate not negotiated")
	}
	if err := c.subscribe(ctx, "lg.z", ""); err != nil {
		t.Fatal(err)
	}
	before, ok := tcpBytesReceived(c.conn.Conn)
	if !ok {
		t.Fatal("no TCP_INFO")
	}
	var total int
	for i, want := range msgs {
		got, err := c.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes %.40q…, want %d bytes %.40q…", i, len(got), got, len(want), want)
		}
		total += len(want)
	}
	if c.compressed != 3 {
		t.Fatalf("%d messages came compressed, want the 3 over the threshold", c.compressed)
	}
	after, _ := tcpBytesReceived(c.conn.Conn)
	if wire := int(after - before); wire <= 0 || wire > total*2/3 {
		t.Fatalf("the kernel counted %d bytes received for %d bytes of messages", wire, total)
	}
}

// A server that does not do compression answers the offer with nothing:
// the connection goes on uncompressed.
func TestDeflateDeclined(t *testing.T) {
	msg := bytes.Repeat([]byte("plain "), 500)
	url := coderServer(t, websocket.CompressionDisabled, 0, [][]byte{msg})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialWS(ctx, &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize, deflate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.deflate {
		t.Fatal("deflate negotiated with a server that has it off")
	}
	if err := c.subscribe(ctx, "lg.z", ""); err != nil {
		t.Fatal(err)
	}
	got, err := c.next()
	if err != nil || !bytes.Equal(got, msg) || c.compressed != 0 {
		t.Fatalf("got %d bytes, err %v, compressed %d", len(got), err, c.compressed)
	}
}

func TestParseDeflateAnswer(t *testing.T) {
	for _, tc := range []struct {
		answer []string
		on, ok bool
	}{
		{nil, false, true},
		{[]string{""}, false, true},
		{[]string{"permessage-deflate; server_no_context_takeover"}, true, true},
		{[]string{"permessage-deflate;client_no_context_takeover;server_no_context_takeover"}, true, true},
		{[]string{"permessage-deflate; server_no_context_takeover; client_no_context_takeover"}, true, true},
		{[]string{"permessage-deflate"}, false, false}, // keeps its context: not what was offered
		{[]string{"permessage-deflate; client_no_context_takeover"}, false, false},
		{[]string{"permessage-deflate; server_no_context_takeover; server_max_window_bits=10"}, false, false},
		{[]string{"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"}, false, false},
		{[]string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, false, false},
		{[]string{"x-webkit-deflate-frame"}, false, false},
		{[]string{"permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"}, false, false},
	} {
		on, err := parseDeflateAnswer(tc.answer)
		if on != tc.on || (err == nil) != tc.ok {
			t.Errorf("%q: on %v err %v, want on %v ok %v", tc.answer, on, err, tc.on, tc.ok)
		}
	}
}

// A handshake whose extension answer breaks RFC 7692 fails the dial.
func TestHandshakeRejectsBadDeflateAnswer(t *testing.T) {
	url, reqs := fakeUpgrader(t, func(r *http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
			"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n\r\n"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialWS(ctx, &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize, deflate: true})
	if err == nil {
		c.Close()
		t.Fatal("dial accepted a window size that was not offered")
	}
	if got := (<-reqs).Header.Get("Sec-WebSocket-Extensions"); got != deflateOffer {
		t.Fatalf("offered %q", got)
	}
}

// compress returns p as a permessage-deflate payload: raw DEFLATE with the
// final 00 00 ff ff removed.
func compress(t testing.TB, p []byte) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(p)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("flush did not end in 00 00 ff ff")
	}
	return out[:len(out)-4]
}

// rsv1 sets RSV1 on a frame built by serverFrame.
func rsv1(f []byte) []byte { f[0] |= 0x40; return f }

// Compressed messages in one frame or several, between plain ones and
// control frames, all come out as they went in.
func TestCompressedFrames(t *testing.T) {
	c, srv := framePair(t)
	c.deflate = true
	one := bytes.Repeat([]byte(`{"k":"v"},`), 300)
	two := noise(200_000, 1) // compressed payload over the read buffer
	z2 := compress(t, two)
	var stream []byte
	stream = append(stream, rsv1(serverFrame(true, wsframe.OpText, compress(t, one), false))...)
	stream = append(stream, serverFrame(true, wsframe.OpText, []byte("plain"), false)...)
	stream = append(stream, rsv1(serverFrame(false, wsframe.OpText, z2[:1000], false))...)
	stream = append(stream, serverFrame(true, wsframe.OpPing, []byte("p"), false)...)
	stream = append(stream, serverFrame(false, wsframe.OpContinuation, z2[1000:70_000], false)...)
	stream = append(stream, serverFrame(true, wsframe.OpContinuation, z2[70_000:], false)...)
	stream = append(stream, rsv1(serverFrame(true, wsframe.OpText, compress(t, nil), false))...) // an empty message
	stream = append(stream, rsv1(serverFrame(true, wsframe.OpText, compress(t, one), false))...)
	written := writeAsync(srv, stream)
	for i, want := range [][]byte{one, []byte("plain"), two, {}, one} {
		got, err := c.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(want))
		}
	}
	if c.compressed != 4 || c.pings != 1 {
		t.Fatalf("compressed %d, pings %d", c.compressed, c.pings)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

// Compression errors end the connection as a protocol error.
func TestCompressedFramesProtocolErrors(t *testing.T) {
	z := compress(t, []byte("hello hello hello"))
	bomb := compress(t, make([]byte, wsReadLimit+1))
	corrupt := append([]byte{0xff, 0xff, 0xff}, z...)
	cases := []struct {
		name    string
		deflate bool
		stream  []byte
	}{
		{"RSV1 without negotiation", false, rsv1(serverFrame(true, wsframe.OpText, z, false))},
		{"RSV1 on a continuation", true, append(serverFrame(false, wsframe.OpText, []byte("a"), false), rsv1(serverFrame(true, wsframe.OpContinuation, z, false))...)},
		{"RSV1 on a ping", true, rsv1(serverFrame(true, wsframe.OpPing, []byte("x"), false))},
		{"RSV2", true, func() []byte { f := serverFrame(true, wsframe.OpText, z, false); f[0] |= 0x20; return f }()},
		{"corrupt DEFLATE", true, rsv1(serverFrame(true, wsframe.OpText, corrupt, false))},
		{"inflates past the limit", true, rsv1(serverFrame(true, wsframe.OpText, bomb, false))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := framePair(t)
			c.deflate = tc.deflate
			written := writeAsync(srv, tc.stream)
			p, err := c.next()
			var pe *protocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %d bytes, err %v; want a protocol error", len(p), err)
			}
			if k := errorKind(err); k != "ws_protocol" {
				t.Fatalf("error kind %q", k)
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Inflating reuses pooled inflaters and the connection's buffer: a
// compressed message costs no allocation once they exist.
func TestInflateDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector has sync.Pool drop what it is given at random")
	}
	z := compress(t, appendDashboard(nil, 1, 10, 99, 1))
	var out []byte
	var err error
	if allocs := testing.AllocsPerRun(100, func() {
		if out, err = inflate(out, z, wsReadLimit); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Fatalf("%.1f allocations per message", allocs)
	}
	if !strings.HasPrefix(string(out), `{"bseq":99,`) {
		t.Fatalf("inflated %.40q", out)
	}
}

// BenchmarkInflate is the cost of inflating one dashboard event as the
// client receives it.
//
//	go test -run '^$' -bench Inflate -benchmem ./cmd/herald/internal/bench/
func BenchmarkInflate(b *testing.B) {
	z := compress(b, appendDashboard(nil, 1, 100, 12345, time.Now().UnixNano()))
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = inflate(out, z, wsReadLimit); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzInflate(f *testing.F) {
	f.Add(compress(f, []byte("hello")))
	f.Add([]byte{0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		out, err := inflate(nil, p, 1<<20)
		if err == nil && len(out) > 1<<20 {
			t.Fatalf("%d bytes out, over the limit", len(out))
		}
	})
}

// BenchmarkInflateShared is the cost of a compressed event for a
// subscriber after the first: the same bytes, found in the shared cache.
func BenchmarkInflateShared(b *testing.B) {
	z := compress(b, appendDashboard(nil, 1, 100, 12345, time.Now().UnixNano()))
	if _, _, err := inflateShared(nil, z, wsReadLimit); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, shared, err := inflateShared(nil, z, wsReadLimit); err != nil || !shared {
			b.Fatal(err, shared)
		}
	}
}

// Connections share what they inflated only for the very same bytes: a
// message that differs in one byte, or collides in its slot, is inflated
// on its own.
func TestInflateShared(t *testing.T) {
	// The cache outlives a run: start from an empty one, so that the
	// first inflate is the first (go test -count).
	for i := range inflateCache {
		inflateCache[i].Store(nil)
	}
	a := appendDashboard(nil, 1, 10, 99, 1)
	za := compress(t, a)
	out, shared, err := inflateShared(nil, za, wsReadLimit)
	if err != nil || shared || !bytes.Equal(out, a) {
		t.Fatalf("first: shared %v err %v", shared, err)
	}
	out, shared, err = inflateShared(nil, za, wsReadLimit)
	if err != nil || !shared || !bytes.Equal(out, a) {
		t.Fatalf("second: shared %v err %v", shared, err)
	}
	// Another message put in a's slot: each still gets its own text.
	b := appendDashboard(nil, 1, 10, 109, 1)
	zb := compress(t, b)
	h := maphash.Bytes(inflateSeed, za)
	inflateCache[h%uint64(len(inflateCache))].Store(&inflated{hash: h, comp: zb, out: b})
	out, shared, err = inflateShared(nil, za, wsReadLimit)
	if err != nil || shared || !bytes.Equal(out, a) {
		t.Fatalf("after a collision: shared %v err %v, got %.30q", shared, err, out)
	}
	// A corrupt message is an error every time, never a cached answer.
	bad := append(bytes.Clone(za), 0xff, 0xff, 0xff)
	bad[0] ^= 0xff
	for range 2 {
		if _, _, err := inflateShared(nil, bad, wsReadLimit); err == nil {
			t.Fatal("corrupt message inflated")
		}
	}
}
