package ws_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/ws"
)

// smallFirstSendBuffer shrinks the server's send buffer of the first
// connection it accepts, so that connection fills up after a few KiB when its
// client stops reading. (Only that one: small send buffers make a sender wait
// for delayed ACKs, which would slow the clients that keep up.)
type smallFirstSendBuffer struct {
	net.Listener
	n atomic.Int64
}

func (l *smallFirstSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.n.Add(1) == 1 {
		_ = c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}

// One client stops reading among 100 that keep up: the 100 get every event,
// the stalled one is disconnected as a slow consumer, and publishing never
// waits for it.
func TestSlowConsumerIsDisconnected(t *testing.T) {
	const normal = 100
	e := newEnv(t, envOptions{
		hub:      hub.Options{QueueBytes: 64 << 10},
		ws:       ws.Options{WriteTimeout: 3 * time.Second},
		listener: func(l net.Listener) net.Listener { return &smallFirstSendBuffer{Listener: l} },
	})

	// The stalled client (the server's first connection) subscribes, reads
	// its ok, then never reads again.
	stalled := e.rawDial(func(c *net.TCPConn) { _ = c.SetReadBuffer(64 << 10) },
		textFrame(`{"op":"subscribe","ref":"s","topics":["slow.t"]}`))
	if f := stalled.readText(); f.Op != "ok" {
		t.Fatalf("stalled client: got %s, want ok", f)
	}

	var counts [normal]atomic.Int64
	var ended [normal]atomic.Value // why a reader stopped
	var failed atomic.Int64
	var readers sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range normal {
		c := e.dial(nil)
		c.subscribe("", "slow.t")
		readers.Add(1)
		go func() {
			defer readers.Done()
			var prev uint64
			for {
				_, b, err := c.c.Read(ctx)
				if err != nil {
					ended[i].Store(err.Error())
					return
				}
				// Only the id: decoding 2 KB of JSON per event under the
				// race detector would make this test slow for nothing.
				id, ok := eventID(b)
				if !ok {
					failed.Add(1)
					return
				}
				cur, err := hub.ParseCursor(id)
				if err != nil || cur.Seq <= prev {
					failed.Add(1)
					return
				}
				prev = cur.Seq
				counts[i].Add(1)
			}
		}()
	}
	wait.For(t, 10*time.Second, "all clients", func() bool { return e.wsClients() == normal+1 })

	// Batches small enough to sit in a socket buffer whole: a reader that
	// keeps up never makes the server's write wait, however slowly the race
	// detector lets it run, so only the stalled client can miss a deadline.
	// (Socket buffers start at 16 KiB and grow as the connection is used.)
	data := json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	batch := make([]hub.Draft, 5)
	for i := range batch {
		batch[i] = hub.Draft{Topic: "slow.t", Data: data}
	}
	published := int64(0)
	keptUp := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			lagging := -1
			for i := range counts {
				if counts[i].Load() < published {
					lagging = i
					break
				}
			}
			if failed.Load() > 0 {
				t.Fatal("a reader that keeps up saw a bad frame or order")
			}
			if lagging < 0 {
				return
			}
			if time.Now().After(deadline) {
				st := e.hub.Stats()
				t.Fatalf("%s: reader %d has %d of %d events (%v); slow kicked %d, ws clients %d",
					what, lagging, counts[lagging].Load(), published, ended[lagging].Load(), st.SlowKicked, st.Clients["ws"])
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	var slowest time.Duration
	kicked := func() bool { return e.hub.Stats().SlowKicked >= 1 && e.wsClients() == normal }
	for i := 0; i < 400 && e.hub.Stats().SlowKicked == 0; i++ {
		start := time.Now()
		if _, err := e.hub.Publish(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
		published += int64(len(batch))
		keptUp("lockstep") // only the stalled client falls behind
	}
	wait.For(t, 10*time.Second, "the stalled client to be dropped", kicked)
	t.Logf("stalled client dropped after %d events (%d KiB); slowest publish %v", published, published*2, slowest)
	if slowest > time.Second {
		t.Errorf("a publish took %v: publishing waited for the stalled client", slowest)
	}

	// The 100 are still connected and get what follows.
	for range 10 {
		if _, err := e.hub.Publish(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
		published += int64(len(batch))
		keptUp("after the kick")
	}
	if n := e.wsClients(); n != normal {
		t.Fatalf("%d ws clients, want %d", n, normal)
	}

	// The stalled client finds its connection closed once it reads again:
	// with 4008 if the close frame got through, else the socket just ends.
	var status string
	for {
		op, p, err := stalled.read(10 * time.Second)
		if err != nil {
			status = "connection ended: " + err.Error()
			break
		}
		if op == 0x8 {
			code := binary.BigEndian.Uint16(p)
			if code != 4008 {
				t.Fatalf("stalled client: close code %d, want 4008", code)
			}
			status = fmt.Sprintf("close %d %q", code, p[2:])
			break
		}
	}
	t.Logf("stalled client: %s", status)
	cancel()
	readers.Wait()
}

// A client's first message may arrive in the same packet as the handshake,
// so net/http has read it before the hijack; it must not be lost.
func TestMessageRightBehindTheHandshake(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.rawDial(nil,
		textFrame(`{"op":"subscribe","ref":1,"topics":["early.t"]}`),
		textFrame(`{"op":"ping","ref":2}`))
	if f := c.readText(); f.Op != "ok" || string(f.Ref) != "1" {
		t.Fatalf("got %s, want the subscribe's ok", f)
	}
	if f := c.readText(); f.Op != "pong" || string(f.Ref) != "2" {
		t.Fatalf("got %s, want the pong", f)
	}
	m := e.publish("early.t", "hello")
	if f := c.readText(); f.Op != "event" || f.ID != m.ID.String() {
		t.Fatalf("got %s, want event %s", f, m.ID)
	}
}

// The premise of TestMessageRightBehindTheHandshake: net/http has the bytes
// that follow the handshake in its buffer when the handler hijacks.
func TestNetHTTPReadsAheadOfTheHandshake(t *testing.T) {
	buffered := make(chan int, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buffered <- brw.Reader.Buffered()
	}))
	defer srv.Close()
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frame := textFrame(`{"op":"ping"}`)
	if _, err := nc.Write(append([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), frame...)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-buffered:
		if n != len(frame) {
			t.Fatalf("net/http buffered %d bytes beyond the request, want %d", n, len(frame))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
}

func TestKeepAlivePings(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{PingInterval: 20 * time.Millisecond}})
	var pings atomic.Int64
	c := e.dial(&websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool {
		pings.Add(1)
		return true
	}})
	ctx, cancel := context.WithCancel(context.Background())
	reading := make(chan error, 1)
	go func() {
		_, _, err := c.c.Read(ctx) // handles pings until the pong below
		reading <- err
	}()
	wait.For(t, 10*time.Second, "3 pings", func() bool { return pings.Load() >= 3 })
	cancel()
	<-reading
	// Cancelling the read closed that client; the server noticed.
	wait.For(t, 10*time.Second, "the server to drop the client", func() bool { return e.wsClients() == 0 })
}

func TestUnansweredPingClosesTheConnection(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{PingInterval: 20 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}})
	c := e.rawDial(nil) // never answers anything
	wait.For(t, 10*time.Second, "the client to register", func() bool { return e.wsClients() == 1 })
	wait.For(t, 10*time.Second, "the server to drop the silent peer", func() bool { return e.wsClients() == 0 })
	for {
		op, _, err := c.read(10 * time.Second)
		if err != nil {
			break // the socket was closed
		}
		if op != 0x9 {
			t.Fatalf("unexpected frame opcode %d", op)
		}
	}
}

func TestPingsCanBeDisabled(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{PingInterval: -1, WriteTimeout: 50 * time.Millisecond}})
	c := e.rawDial(nil)
	wait.For(t, 10*time.Second, "the client to register", func() bool { return e.wsClients() == 1 })
	if _, _, err := c.read(300 * time.Millisecond); err == nil {
		t.Fatal("got a frame with pings disabled")
	}
	if n := e.wsClients(); n != 1 {
		t.Fatalf("%d clients, want the silent one still connected", n)
	}
}

// Connections come and go without leaving goroutines behind.
func TestNoGoroutineLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	func() {
		e := newEnv(t, envOptions{ws: ws.Options{PingInterval: 5 * time.Millisecond}})
		defer e.close()
		for i := range 1000 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPClient: e.http})
			if err != nil {
				cancel()
				t.Fatalf("cycle %d: %v", i, err)
			}
			switch i % 4 {
			case 0: // a normal close
				c.Close(websocket.StatusNormalClosure, "")
			case 1: // vanish
				c.CloseNow()
			case 2: // subscribe, then close while events flow
				_ = c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","topics":["leak.>"]}`))
				e.publish("leak.t", i)
				c.CloseNow()
			case 3: // a bad message, then close
				_ = c.Write(ctx, websocket.MessageText, []byte(`{`))
				c.Close(websocket.StatusNormalClosure, "")
			}
			cancel()
		}
		wait.For(t, 10*time.Second, "every client to be released", func() bool { return e.wsClients() == 0 })
	}()
	goleak.VerifyNone(t, before)
}

// Wait does not return while a connection is still being served, and does
// once it ends.
func TestWaitTracksConnections(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	c.roundTrip("x")
	done := make(chan error, 1)
	go func() { done <- e.handler.Wait(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with a connection open", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.c.Close(websocket.StatusNormalClosure, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the connection closed")
	}
}

// eventID returns the id of an event frame, which the server writes first.
func eventID(b []byte) (string, bool) {
	const prefix = `{"op":"event","id":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return "", false
	}
	b = b[len(prefix):]
	i := bytes.IndexByte(b, '"')
	if i < 0 {
		return "", false
	}
	return string(b[:i]), true
}
