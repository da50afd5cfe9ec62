package ws_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/wsframe"
	"github.com/heraldpush/herald/transport/ws"
)

// env is a hub and a WebSocket handler on a real HTTP server.
type env struct {
	t       testing.TB
	hub     *hub.Hub
	handler *ws.Handler
	srv     *httptest.Server
	url     string // ws://…/v1/ws
	http    *http.Client
	closed  sync.Once
}

type envOptions struct {
	hub      hub.Options
	ws       ws.Options
	listener func(net.Listener) net.Listener // wraps the server's listener
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	h, err := hub.New(o.hub)
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	o.ws.Hub = h
	handler := ws.New(o.ws)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ws", handler)
	srv := httptest.NewUnstartedServer(mux)
	if o.listener != nil {
		srv.Listener = o.listener(srv.Listener)
	}
	srv.Start()
	e := &env{
		t:       t,
		hub:     h,
		handler: handler,
		srv:     srv,
		url:     "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws",
		http:    &http.Client{Transport: &http.Transport{}},
	}
	t.Cleanup(e.close)
	return e
}

// close shuts everything down in the order the server binary does.
func (e *env) close() { e.closed.Do(e.shutdown) }

func (e *env) shutdown() {
	e.hub.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.handler.Wait(ctx); err != nil {
		e.t.Errorf("handler.Wait: %v", err)
	}
	e.srv.Close()
	e.http.CloseIdleConnections()
	if err := e.hub.Close(ctx); err != nil {
		e.t.Errorf("hub.Close: %v", err)
	}
}

// publish publishes one event and returns it.
func (e *env) publish(topic string, data any) *hub.Message {
	e.t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		e.t.Fatal(err)
	}
	msgs, err := e.hub.Publish(context.Background(), hub.Draft{Topic: topic, Data: b})
	if err != nil {
		e.t.Fatalf("publish %s: %v", topic, err)
	}
	return msgs[0]
}

// wsClients counts the hub's open WebSocket clients.
func (e *env) wsClients() int64 { return e.hub.Stats().Clients["ws"] }

// frame is any server message.
type frame struct {
	Op     string          `json:"op"`
	Ref    json.RawMessage `json:"ref"`
	ID     string          `json:"id"`
	Topic  string          `json:"topic"`
	Type   string          `json:"type"`
	Key    *string         `json:"key"`
	Data   json.RawMessage `json:"data"`
	Delta  *string         `json:"delta"`
	Time   string          `json:"time"`
	Reason string          `json:"reason"`
	Topics []string        `json:"topics"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`

	raw []byte
}

func (f frame) String() string { return abbrev(f.raw) }

// seq returns the event's position in the log.
func (f frame) seq(t testing.TB) uint64 {
	t.Helper()
	c, err := hub.ParseCursor(f.ID)
	if err != nil {
		t.Fatalf("frame %s: bad id: %v", f, err)
	}
	return c.Seq
}

func parseFrame(t testing.TB, b []byte) frame {
	t.Helper()
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("server sent invalid JSON %q: %v", b, err)
	}
	f.raw = b
	return f
}

// client is a WebSocket client speaking the protocol.
type client struct {
	t  testing.TB
	c  *websocket.Conn
	rc context.Context // bounds every read of the test
}

func (e *env) dial(opts *websocket.DialOptions) *client {
	e.t.Helper()
	c, err := e.tryDial(e.t, opts)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	return c
}

func (e *env) tryDial(t testing.TB, opts *websocket.DialOptions) (*client, error) {
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = e.http
	}
	if opts.Subprotocols == nil {
		opts.Subprotocols = []string{ws.Subprotocol}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url, opts)
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	rc, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(func() {
		rcancel()
		c.CloseNow()
	})
	return &client{t: t, c: c, rc: rc}, nil
}

// send writes v as one JSON text frame.
func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.c.Write(c.rc, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write %s: %v", abbrev(b), err)
	}
}

// recv reads the next frame, failing the test after 10 s.
func (c *client) recv() frame {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.rc, 10*time.Second)
	defer cancel()
	typ, b, err := c.c.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("server sent a %v frame", typ)
	}
	return parseFrame(c.t, b)
}

// expect reads the next frame and checks its op.
func (c *client) expect(op string) frame {
	c.t.Helper()
	f := c.recv()
	if f.Op != op {
		c.t.Fatalf("got %s, want op %q", f, op)
	}
	return f
}

// subscribe subscribes and waits for the ok.
func (c *client) subscribe(since string, topics ...string) {
	c.t.Helper()
	m := map[string]any{"op": "subscribe", "ref": "sub", "topics": topics}
	if since != "" {
		m["since"] = since
	}
	c.send(m)
	if f := c.expect("ok"); string(f.Ref) != `"sub"` {
		c.t.Fatalf("subscribe reply %s: wrong ref", f)
	}
}

// roundTrip proves the connection is usable: a ping gets its pong.
func (c *client) roundTrip(ref string) {
	c.t.Helper()
	c.send(map[string]any{"op": "ping", "ref": ref})
	f := c.expect("pong")
	if want := fmt.Sprintf("%q", ref); string(f.Ref) != want {
		c.t.Fatalf("pong %s: want ref %s", f, want)
	}
}

// closeStatus reads until the connection ends and returns its close status.
func (c *client) closeStatus(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.rc, timeout)
	defer cancel()
	for {
		_, _, err := c.c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				c.t.Fatalf("connection still open after %v", timeout)
			}
			return websocket.CloseStatus(err)
		}
	}
}

// rawConn is a hand-rolled WebSocket client for what websocket.Dial cannot
// do: send a message in the same write as the handshake, or stop reading.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// rawDial does the handshake and sends extra right behind it, in the same write.
func (e *env) rawDial(configure func(*net.TCPConn), extra ...[]byte) *rawConn {
	e.t.Helper()
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	if configure != nil {
		configure(nc.(*net.TCPConn))
	}
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	b := []byte(req)
	for _, x := range extra {
		b = append(b, x...)
	}
	if _, err := nc.Write(b); err != nil {
		e.t.Fatal(err)
	}
	r := &rawConn{t: e.t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		e.t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		e.t.Fatalf("handshake: status %d", resp.StatusCode)
	}
	return r
}

// clientFrame encodes a masked client frame.
func clientFrame(opcode byte, payload []byte) []byte {
	b := wsframe.AppendHeader(nil, wsframe.Fin|opcode, true, len(payload))
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func textFrame(s string) []byte { return clientFrame(0x1, []byte(s)) }

// read returns the next frame's opcode and payload.
func (r *rawConn) read(timeout time.Duration) (byte, []byte, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(timeout))
	b0, masked, p, err := wsframe.ReadFrame(r.br, 16<<20)
	if err != nil {
		return 0, nil, err
	}
	if masked {
		return 0, nil, errors.New("server frame is masked")
	}
	return b0 & 0x0F, p, nil
}

// readText returns the next text frame, skipping pings.
func (r *rawConn) readText() frame {
	r.t.Helper()
	for {
		op, p, err := r.read(10 * time.Second)
		if err != nil {
			r.t.Fatalf("raw read: %v", err)
		}
		switch op {
		case 0x1:
			return parseFrame(r.t, p)
		case 0x9:
			continue
		default:
			r.t.Fatalf("unexpected frame opcode %d payload %q", op, p)
		}
	}
}

// abbrev shortens b for a failure message.
func abbrev(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%s… (%d bytes)", b[:200], len(b))
	}
	return string(b)
}
