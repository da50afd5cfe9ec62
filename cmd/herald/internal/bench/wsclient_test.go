package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/tcppair"
	"github.com/heraldpush/herald/internal/wsframe"
	"github.com/heraldpush/herald/transport/ws"
)

// serverFrame builds a frame as a server sends it: unmasked, with the
// shortest length encoding unless long forces the 64-bit one.
func serverFrame(fin bool, op byte, p []byte, long bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	if !long {
		return append(wsframe.AppendHeader(nil, b0, false, len(p)), p...)
	}
	f := []byte{b0, 127}
	f = binary.BigEndian.AppendUint64(f, uint64(len(p)))
	return append(f, p...)
}

// readClientFrame reads one frame as a server would, insisting on the mask
// every client frame must carry, and returns its unmasked payload.
func readClientFrame(r io.Reader) (fin bool, op byte, p []byte, err error) {
	b0, masked, p, err := wsframe.ReadFrame(r, wsReadLimit)
	if err != nil {
		return false, 0, nil, err
	}
	if !masked {
		return false, 0, nil, errors.New("client frame is not masked")
	}
	return b0&wsframe.Fin != 0, b0 & 0x0f, p, nil
}

// framePair connects a wsConn to the server end of a real loopback socket.
func framePair(t *testing.T) (*wsConn, net.Conn) {
	t.Helper()
	srv, cli := tcppair.New(t, 0, 0)
	c := newWSConn(cli, wsOptions{bufSize: wsBufferSize})
	t.Cleanup(func() { c.Close() })
	return c, srv
}

// writeAsync writes b from its own goroutine (a large write blocks until the
// client reads) and returns where its result arrives.
func writeAsync(conn net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(b)
		done <- err
	}()
	return done
}

func TestFrameParser(t *testing.T) {
	c, srv := framePair(t)
	mid := bytes.Repeat([]byte("m"), 300)    // 16-bit length
	big := bytes.Repeat([]byte("b"), 70_000) // 64-bit length, larger than the read buffer
	var stream []byte
	stream = append(stream, serverFrame(true, wsframe.OpText, []byte("small"), false)...)
	stream = append(stream, serverFrame(true, wsframe.OpText, mid, false)...)
	stream = append(stream, serverFrame(true, wsframe.OpText, big, false)...)
	stream = append(stream, serverFrame(true, wsframe.OpText, []byte("long-encoded"), true)...)
	stream = append(stream, serverFrame(false, wsframe.OpText, []byte("frag-1|"), false)...)
	stream = append(stream, serverFrame(true, wsframe.OpPing, []byte("are you there"), false)...)
	stream = append(stream, serverFrame(false, wsframe.OpContinuation, []byte("frag-2|"), false)...)
	stream = append(stream, serverFrame(false, wsframe.OpContinuation, big, false)...)
	stream = append(stream, serverFrame(true, wsframe.OpContinuation, []byte("|frag-4"), false)...)
	stream = append(stream, serverFrame(true, wsframe.OpPong, nil, false)...) // unsolicited: ignored
	stream = append(stream, serverFrame(true, wsframe.OpText, []byte("after"), false)...)
	closing := binary.BigEndian.AppendUint16(nil, 1001)
	stream = append(stream, serverFrame(true, wsframe.OpClose, append(closing, "going away"...), false)...)
	written := writeAsync(srv, stream)

	want := []string{"small", string(mid), string(big), "long-encoded",
		"frag-1|frag-2|" + string(big) + "|frag-4", "after"}
	for i, w := range want {
		p, err := c.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(p) != w {
			t.Fatalf("message %d: got %d bytes %.20q…, want %d bytes %.20q…", i, len(p), p, len(w), w)
		}
	}
	_, err := c.next()
	var ce *closeError
	if !errors.As(err, &ce) || ce.code != 1001 || ce.reason != "going away" {
		t.Fatalf("after the close frame: %v, want a 1001 close", err)
	}
	if k := errorKind(err); k != "ws_close_1001" {
		t.Fatalf("error kind %q", k)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if c.pings != 1 {
		t.Fatalf("answered %d pings, want 1", c.pings)
	}

	// What the server got back: the pong with the ping's payload, then the
	// close frame echoing its code, both masked.
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(srv)
	fin, op, p, err := readClientFrame(br)
	if err != nil || !fin || op != wsframe.OpPong || string(p) != "are you there" {
		t.Fatalf("pong: fin %v op %d payload %q err %v", fin, op, p, err)
	}
	fin, op, p, err = readClientFrame(br)
	if err != nil || !fin || op != wsframe.OpClose || !bytes.Equal(p, closing) {
		t.Fatalf("close reply: fin %v op %d payload %q err %v", fin, op, p, err)
	}
}

func TestFrameParserRejectsProtocolErrors(t *testing.T) {
	masked := serverFrame(true, wsframe.OpText, []byte("x"), false)
	masked[1] |= 0x80
	masked = append(masked[:2], append([]byte{1, 2, 3, 4}, masked[2:]...)...)
	rsv := serverFrame(true, wsframe.OpText, []byte("x"), false)
	rsv[0] |= 0x40
	huge := []byte{0x81, 127}
	huge = binary.BigEndian.AppendUint64(huge, 1<<40)
	cases := map[string][]byte{
		"masked server frame":       masked,
		"reserved bits":             rsv,
		"orphan continuation":       serverFrame(true, wsframe.OpContinuation, []byte("x"), false),
		"message inside a fragment": append(serverFrame(false, wsframe.OpText, []byte("a"), false), serverFrame(true, wsframe.OpText, []byte("b"), false)...),
		"fragmented ping":           serverFrame(false, wsframe.OpPing, []byte("x"), false),
		"oversize ping":             serverFrame(true, wsframe.OpPing, bytes.Repeat([]byte("x"), 126), false),
		"unknown opcode":            serverFrame(true, 0x3, []byte("x"), false),
		"over the read limit":       huge,
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			c, srv := framePair(t)
			written := writeAsync(srv, b)
			p, err := c.next()
			if err == nil {
				t.Fatalf("accepted: %q", p)
			}
			var ce *closeError
			if errors.As(err, &ce) {
				t.Fatalf("reported as a close: %v", err)
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAppendFrameMasksEveryLength(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		p := bytes.Repeat([]byte{'z'}, n)
		f := appendFrame(nil, wsframe.OpText, p)
		if n > 0 && bytes.Contains(f, p) {
			t.Fatalf("%d bytes: payload sent in the clear", n)
		}
		fin, op, got, err := readClientFrame(bytes.NewReader(f))
		if err != nil || !fin || op != wsframe.OpText || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: fin %v op %d len %d err %v", n, fin, op, len(got), err)
		}
	}
}

// The per-message path of a WebSocket subscriber allocates nothing.
func TestReadPathDoesNotAllocate(t *testing.T) {
	c, srv := framePair(t)
	const n = 600
	var stream []byte
	for i := 1; i <= n; i++ {
		stream = append(stream, serverFrame(true, wsframe.OpText, fmt.Appendf(nil,
			`{"op":"event","id":"abcdefghij-%d","topic":"bench.0","type":"bench","data":{"bseq":%d,"bts":%d,"pad":"xxxxxxxx"},"time":"2026-11-21T00:00:00Z"}`,
			i, i, time.Now().UnixNano()), false)...)
	}
	written := writeAsync(srv, stream)
	r := &run{}
	for i := range r.hists {
		r.hists[i].h = newHist()
	}
	s := &subscriber{}
	read := func() {
		p, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		cur, seq, sent, ok := parsePayload(p)
		if !ok {
			t.Fatalf("unparsed: %q", p)
		}
		r.observe(s, cur, seq, sent, c.conn.last)
	}
	if allocs := testing.AllocsPerRun(n-1, read); allocs != 0 {
		t.Fatalf("%.2f allocations per message", allocs)
	}
	if got := s.received.Load(); got != n {
		t.Fatalf("received %d of %d", got, n)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

func TestDialSubscribeAndReceive(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := dialWS(ctx, d, nil, ts.url, wsOptions{bufSize: wsBufferSize})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.conn.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("connected from %s, want the dialer's 127.0.0.2", got)
	}
	if err := c.subscribe(ctx, "lg.a", ""); err != nil {
		t.Fatal(err)
	}
	msgs, err := ts.hub.Publish(ctx,
		hub.Draft{Topic: "lg.b", Type: "bench", Data: []byte(`{"bseq":1,"bts":5}`)},
		hub.Draft{Topic: "lg.a", Type: "bench", Data: []byte(`{"bseq":7,"bts":123}`)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	cur, seq, sent, ok := parsePayload(p)
	id := msgs[1].ID.String()
	if !ok || seq != 7 || sent != 123 || fmt.Sprint(cur) != id[strings.LastIndexByte(id, '-')+1:] {
		t.Fatalf("got cursor %d seq %d sent %d ok %v from %s (published as %s)", cur, seq, sent, ok, p, id)
	}
	if !bytes.Contains(p, []byte(`"topic":"lg.a"`)) {
		t.Fatalf("event of the wrong topic: %s", p)
	}
}

// A subscriber answers the server's keep-alive pings: the server would drop
// it within a ping interval plus the write timeout otherwise.
func TestSubscriberAnswersPings(t *testing.T) {
	// A ping's pong is due within the write timeout. The loop runs for
	// twice that, so a client that left pings unanswered would be closed
	// while it runs; the timeout is long enough that a busy machine
	// pausing the test's reads for a moment is not taken for that.
	const pongDue = time.Second
	ts := newTestServer(t, serverOptions{ws: ws.Options{PingInterval: 10 * time.Millisecond, WriteTimeout: pongDue}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialWS(ctx, &net.Dialer{}, nil, ts.url, wsOptions{bufSize: wsBufferSize})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.subscribe(ctx, "lg.ping", ""); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond) // paces the events that wake the reader
	defer tick.Stop()
	for i := 1; c.pings < 30 || time.Since(start) < 2*pongDue; i++ {
		if ctx.Err() != nil {
			t.Fatalf("only %d pings seen", c.pings)
		}
		<-tick.C
		if _, err := ts.hub.Publish(ctx, hub.Draft{Topic: "lg.ping", Type: "bench", Data: fmt.Appendf(nil, `{"bseq":%d,"bts":1}`, i)}); err != nil {
			t.Fatal(err)
		}
		p, err := c.next()
		if err != nil {
			t.Fatalf("after %d pings and %v: %v", c.pings, time.Since(start), err)
		}
		if _, seq, _, ok := parsePayload(p); !ok || seq != int64(i) {
			t.Fatalf("event %d: %s", i, p)
		}
	}
	if n := ts.hub.Stats().Clients["ws"]; n != 1 {
		t.Fatalf("%d ws clients on the server, want 1", n)
	}
}

func TestDialReportsHTTPErrors(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dialWS(ctx, &net.Dialer{}, nil, ts.url+"/nowhere", wsOptions{bufSize: wsBufferSize})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("dial to a missing path: %v, want a 404", err)
	}
}

// fakeUpgrader answers every request with respond's response and sends the
// request it parsed to got.
func fakeUpgrader(t *testing.T, respond func(r *http.Request) string) (url string, got <-chan *http.Request) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *http.Request, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				reqs <- req
				if resp := respond(req); resp != "" {
					_, _ = io.WriteString(conn, resp)
				} else {
					// No answer: hold the connection until the client leaves.
					_, _ = io.Copy(io.Discard, conn)
				}
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return "http://" + ln.Addr().String(), reqs
}

func TestHandshakeChecksTheServer(t *testing.T) {
	upgrade := func(accept, extra string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + accept + "\r\n" + extra + "\r\n"
	}
	cases := []struct {
		name    string
		respond func(r *http.Request) string
		ok      bool
	}{
		{"valid", func(r *http.Request) string {
			return upgrade(wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")), "Sec-WebSocket-Protocol: herald.v1\r\n")
		}, true},
		{"no subprotocol", func(r *http.Request) string { return upgrade(wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")), "") }, true},
		{"wrong accept", func(r *http.Request) string { return upgrade(wsframe.AcceptKey("something else"), "") }, false},
		{"other subprotocol", func(r *http.Request) string {
			return upgrade(wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")), "Sec-WebSocket-Protocol: chat\r\n")
		}, false},
		{"extension", func(r *http.Request) string {
			return upgrade(wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")), "Sec-WebSocket-Extensions: permessage-deflate\r\n")
		}, false},
		{"no upgrade header", func(r *http.Request) string {
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsframe.AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
		}, false},
		{"not switching", func(*http.Request) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, reqs := fakeUpgrader(t, tc.respond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := dialWS(ctx, &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize})
			if tc.ok != (err == nil) {
				t.Fatalf("dial: %v, want success %v", err, tc.ok)
			}
			if c != nil {
				c.Close()
			}
			r := <-reqs
			h := r.Header
			if r.Method != http.MethodGet || r.URL.Path != "/v1/ws" || !headerHas(h, "Upgrade", "websocket") ||
				!headerHas(h, "Connection", "upgrade") || h.Get("Sec-WebSocket-Version") != "13" ||
				h.Get("Sec-WebSocket-Protocol") != "herald.v1" || len(h.Get("Sec-WebSocket-Key")) != 24 {
				t.Fatalf("bad upgrade request: %s %s %v", r.Method, r.URL, h)
			}
		})
	}
}

func TestHandshakeIsBoundedByTheContext(t *testing.T) {
	url, _ := fakeUpgrader(t, func(*http.Request) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := dialWS(ctx, &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize})
	if err == nil {
		t.Fatal("dial to a silent server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %v", d)
	}
}
