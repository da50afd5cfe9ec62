package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// dialCounter counts the TCP connections a client opens.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// newClient returns a client that speaks protos, trusts pool (nil: the
// system's) and counts its connections. The test's end closes them.
func newClient(t *testing.T, pool *x509.CertPool, protos ...func(*http.Protocols, bool)) (*http.Client, *dialCounter) {
	var p http.Protocols
	for _, set := range protos {
		set(&p, true)
	}
	d := &dialCounter{}
	tr := &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Protocols:       &p,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, d
}

var (
	http1 = (*http.Protocols).SetHTTP1
	http2 = (*http.Protocols).SetHTTP2
	h2c   = (*http.Protocols).SetUnencryptedHTTP2
)

// startTLS runs a server with c over TLS with a fresh certificate. in.URL is
// https, and in.Client speaks HTTP/2 and HTTP/1.1 as a browser does,
// trusting the certificate; dials counts its connections.
func startTLS(t *testing.T, c server.Config) (in *heraldtest.Node, cert heraldtest.Cert, dials *dialCounter) {
	t.Helper()
	cert = heraldtest.NewCert(t)
	c.TLSCert, c.TLSKey = cert.CertFile, cert.KeyFile
	in = start(t, c)
	in.URL = "https://" + strings.TrimPrefix(in.URL, "http://")
	in.Client, dials = newClient(t, cert.Pool, http1, http2)
	return in, cert, dials
}

// mustGet makes a GET with client and checks its status and protocol.
func mustGet(t *testing.T, client *http.Client, url, proto string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Proto != proto {
		t.Fatalf("GET %s: %d over %s, want 200 over %s", url, resp.StatusCode, resp.Proto, proto)
	}
}

// TestTLSHTTP2ManySSEStreams opens many SSE streams over HTTPS and checks
// that they are HTTP/2 streams of one TCP connection, and that each gets a
// published event.
func TestTLSHTTP2ManySSEStreams(t *testing.T) {
	in, _, dials := startTLS(t, server.Config{})
	if !strings.Contains(in.Logs.String(), "scheme=https protocols=h2,http/1.1") {
		t.Errorf("the listening line does not name the scheme:\n%s", in.Logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A first request opens the connection; requests made together before
	// any exists could each dial one.
	mustGet(t, in.Client, in.URL+"/healthz", "HTTP/2.0")
	streams := openStreams(ctx, t, in.Client, in.URL, "tls.many", manyStreams, "HTTP/2.0")
	if got := in.Clients(t); got != manyStreams {
		t.Errorf("the server counts %d clients, want %d", got, manyStreams)
	}
	if n := connsUsed(streams); n != 1 {
		t.Errorf("the streams went over %d connections, want 1", n)
	}
	publishAndReceive(t, in.Client, in.URL, "tls.many", streams)
	if n := dials.n.Load(); n != 1 {
		t.Errorf("the client opened %d TCP connections, want 1 for all %d streams", n, manyStreams)
	}
}

// TestTLSHTTP2SlowStream stalls one SSE stream of an HTTP/2 connection and
// checks that it alone is dropped as a slow consumer: another stream on the
// same connection keeps receiving every event, before and after.
func TestTLSHTTP2SlowStream(t *testing.T) {
	in, _, dials := startTLS(t, server.Config{QueueBytes: 65536, WriteTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustGet(t, in.Client, in.URL+"/healthz", "HTTP/2.0")
	streams := openStreams(ctx, t, in.Client, in.URL, "tls.slow", 2, "HTTP/2.0")
	stalled, reader := streams[0], streams[1]

	// stalled reads nothing more: the client's flow-control window for it
	// fills (4 MiB), then its queue on the server, and the server drops it.
	// reader keeps up.
	body := `{"topic":"tls.slow","data":"` + strings.Repeat("x", 16<<10) + `"}`
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for ; slowConsumers(t, in) == 0; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("no slow consumer after %d events", n)
		}
		if status, resp := in.Post(t, "/v1/publish", body); status != http.StatusOK {
			t.Fatalf("publish: status %d, body %.200s", status, resp)
		}
		if _, err := reader.nextData(); err != nil {
			t.Fatalf("the reading stream failed after %d events: %v", n, err)
		}
	}
	t.Logf("the stalled stream was dropped after %d events of 16 KiB", n)
	// What the client had buffered, then the end: a reset, not a clean end
	// that would pass for a complete response.
	got, err := io.Copy(io.Discard, stalled.br)
	t.Logf("the stalled stream ended after %d more bytes: %v", got, err)
	if err == nil {
		t.Errorf("the stalled stream ended cleanly, want a reset")
	}

	publishAndReceive(t, in.Client, in.URL, "tls.slow", []stream{reader})
	if k := slowConsumers(t, in); k != 1 {
		t.Errorf("%d slow consumers, want only the stalled stream", k)
	}
	if n := dials.n.Load(); n != 1 {
		t.Errorf("the client opened %d TCP connections, want 1", n)
	}
}

// TestTLSShutdownEndsHTTP2Streams checks that shutdown ends SSE streams
// over HTTP/2 at once, cleanly, as it does hijacked HTTP/1.1 ones.
func TestTLSShutdownEndsHTTP2Streams(t *testing.T) {
	in, _, _ := startTLS(t, server.Config{ShutdownTimeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustGet(t, in.Client, in.URL+"/healthz", "HTTP/2.0")
	streams := openStreams(ctx, t, in.Client, in.URL, "tls.bye", 10, "HTTP/2.0")

	err, took := in.Stop(t, 25*time.Second)
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("shutdown with open HTTP/2 streams took %v; they should end at once", took)
	}
	for i, s := range streams {
		if rest, err := io.ReadAll(s.br); err != nil {
			t.Errorf("stream %d did not end cleanly: %v (after %q)", i, err, rest)
		}
	}
	if strings.Contains(in.Logs.String(), "level=WARN") {
		t.Errorf("a warning during shutdown:\n%s", in.Logs)
	}
}

// TestTLSHTTP1SSE checks SSE over HTTP/1.1 with TLS, for clients that do
// not speak HTTP/2: the streams are hijacked *tls.Conns, each on its own
// connection, and shutdown ends them at once too.
func TestTLSHTTP1SSE(t *testing.T) {
	in, cert, _ := startTLS(t, server.Config{ShutdownTimeout: 20 * time.Second})
	client, _ := newClient(t, cert.Pool, http1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := openStreams(ctx, t, client, in.URL, "tls.h1", 3, "HTTP/1.1")
	if n := connsUsed(streams); n != 3 {
		t.Errorf("3 HTTP/1.1 streams went over %d connections", n)
	}
	publishAndReceive(t, client, in.URL, "tls.h1", streams)

	err, took := in.Stop(t, 25*time.Second)
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("shutdown with open streams took %v; they should end at once", took)
	}
	for i, s := range streams {
		if rest, err := io.ReadAll(s.br); err != nil {
			t.Errorf("stream %d did not end cleanly: %v (after %q)", i, err, rest)
		}
	}
}

// TestTLSWebSocket opens a WebSocket over TLS from a client that already
// holds an HTTP/2 connection to the server, as a browser that loaded the
// page does, and checks that it upgrades over HTTP/1.1 on a connection of
// its own and carries events.
func TestTLSWebSocket(t *testing.T) {
	cert := heraldtest.NewCert(t)
	in := start(t, server.Config{TLSCert: cert.CertFile, TLSKey: cert.KeyFile})
	in.URL = "https://" + strings.TrimPrefix(in.URL, "http://")
	var dials *dialCounter
	in.Client, dials = newClient(t, cert.Pool, http1, http2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	mustGet(t, in.Client, in.URL+"/healthz", "HTTP/2.0")
	resp := wsSubscribeAndReceive(ctx, t, in, "wss"+strings.TrimPrefix(in.URL, "https"),
		&websocket.DialOptions{HTTPClient: in.Client}, "tls.ws")
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Proto != "HTTP/1.1" {
		t.Errorf("handshake: %d over %s, want 101 over HTTP/1.1", resp.StatusCode, resp.Proto)
	}
	if n := dials.n.Load(); n != 2 {
		t.Errorf("the client opened %d connections, want 2: one HTTP/2, one for the WebSocket", n)
	}
}

// TestHTTP2NoExtendedConnect reads the SETTINGS frame the server opens
// HTTP/2 with, over TLS and over h2c, and checks that it does not offer
// extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441). A browser
// offered it opens WebSockets as streams of the HTTP/2 connection, which
// coder/websocket cannot accept: this test fails if a Go release turns it
// on by default (see server.Config.checkHTTP2).
func TestHTTP2NoExtendedConnect(t *testing.T) {
	settings := func(t *testing.T, conn net.Conn) {
		t.Helper()
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// The client's connection preface: the magic string and an empty
		// SETTINGS frame (RFC 9113 §3.4).
		preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
		if _, err := io.WriteString(conn, preface); err != nil {
			t.Fatal(err)
		}
		// The server's preface is its SETTINGS frame: a 9-byte frame
		// header (length 24 bits, type 4, flags, stream 0), then 6 bytes
		// for each setting, an identifier of 16 bits and a value of 32.
		var head [9]byte
		if _, err := io.ReadFull(conn, head[:]); err != nil {
			t.Fatalf("no frame from the server: %v", err)
		}
		length := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
		if head[3] != 0x4 || head[4]&0x1 != 0 || length%6 != 0 {
			t.Fatalf("the server's first frame has header % x, not that of SETTINGS", head)
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatalf("SETTINGS payload: %v", err)
		}
		const maxConcurrentStreams, enableConnectProtocol = 0x3, 0x8
		got := make(map[uint16]uint32)
		for p := payload; len(p) > 0; p = p[6:] {
			got[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
		}
		t.Logf("server SETTINGS: %v", got)
		if _, ok := got[maxConcurrentStreams]; !ok {
			t.Errorf("SETTINGS %v without MAX_CONCURRENT_STREAMS: not the frame expected", got)
		}
		if v := got[enableConnectProtocol]; v != 0 {
			t.Errorf("the server offers extended CONNECT (ENABLE_CONNECT_PROTOCOL=%d): browsers would open WebSockets over HTTP/2", v)
		}
	}
	t.Run("TLS", func(t *testing.T) {
		in, cert, _ := startTLS(t, server.Config{})
		conn, err := tls.Dial("tcp", strings.TrimPrefix(in.URL, "https://"), &tls.Config{RootCAs: cert.Pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			conn.Close()
			t.Fatalf("ALPN chose %q, want h2", p)
		}
		settings(t, conn)
	})
	t.Run("h2c", func(t *testing.T) {
		in := start(t, server.Config{H2C: true})
		conn, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		settings(t, conn)
	})
}

// TestH2C checks that H2C serves HTTP/2 without TLS, many SSE streams
// over one connection, and HTTP/1.1, SSE over it and WebSockets on the same
// port.
func TestH2C(t *testing.T) {
	in := start(t, server.Config{H2C: true})
	if !strings.Contains(in.Logs.String(), "scheme=http protocols=h2c,http/1.1") {
		t.Errorf("the listening line does not name h2c:\n%s", in.Logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("HTTP/2", func(t *testing.T) {
		client, dials := newClient(t, nil, h2c)
		mustGet(t, client, in.URL+"/healthz", "HTTP/2.0")
		streams := openStreams(ctx, t, client, in.URL, "h2c.many", manyStreams, "HTTP/2.0")
		// Not the count of dials, as over TLS: Go's client pools an h2c
		// connection for reuse only after handing it to its first request,
		// and requests that come in between dial connections of their own,
		// which it then closes unused and sends them over the pooled one.
		if n := connsUsed(streams); n != 1 {
			t.Errorf("the streams went over %d connections, want 1", n)
		}
		t.Logf("the client dialed %d connections", dials.n.Load())
		publishAndReceive(t, client, in.URL, "h2c.many", streams)
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		client, _ := newClient(t, nil, http1)
		mustGet(t, client, in.URL+"/healthz", "HTTP/1.1")
		streams := openStreams(ctx, t, client, in.URL, "h1.few", 3, "HTTP/1.1")
		publishAndReceive(t, client, in.URL, "h1.few", streams)
		resp := wsSubscribeAndReceive(ctx, t, in, "ws"+strings.TrimPrefix(in.URL, "http"),
			&websocket.DialOptions{HTTPClient: client}, "h1.ws")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("handshake: %d", resp.StatusCode)
		}
	})
}

// TestNoH2CByDefault checks that a server without H2C or TLS speaks only
// HTTP/1.1: a client that insists on HTTP/2 fails.
func TestNoH2CByDefault(t *testing.T) {
	in := start(t, server.Config{})
	if !strings.Contains(in.Logs.String(), "scheme=http protocols=http/1.1") {
		t.Errorf("the listening line does not name the protocol:\n%s", in.Logs)
	}
	client, _ := newClient(t, nil, h2c)
	client.Timeout = 20 * time.Second
	if resp, err := client.Get(in.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("an h2c request succeeded without H2C: %s", resp.Proto)
	}
	mustGet(t, in.Client, in.URL+"/healthz", "HTTP/1.1")
}

// stream is an open SSE response whose retry: line has been read: its
// subscription is live.
type stream struct {
	resp *http.Response
	br   *bufio.Reader
	conn *usedConn // the connection that carries it
}

// usedConn is the connection a request went over, as httptrace reports it
// from a goroutine of the transport.
type usedConn struct {
	mu   sync.Mutex
	conn net.Conn
}

func (u *usedConn) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		u.mu.Lock()
		u.conn = info.Conn
		u.mu.Unlock()
	}})
}

// connsUsed returns how many connections carry streams.
func connsUsed(streams []stream) int {
	seen := make(map[net.Conn]bool)
	for _, s := range streams {
		s.conn.mu.Lock()
		seen[s.conn.conn] = true
		s.conn.mu.Unlock()
	}
	return len(seen)
}

// openStreams opens n SSE streams on pattern at once, each over proto. The
// streams end with ctx.
func openStreams(ctx context.Context, t *testing.T, client *http.Client, baseURL, pattern string, n int, proto string) []stream {
	t.Helper()
	streams := make([]stream, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			used := &usedConn{}
			req, _ := http.NewRequestWithContext(used.trace(ctx), http.MethodGet, baseURL+"/v1/events?topic="+pattern, nil)
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			streams[i] = stream{resp: resp, br: bufio.NewReader(resp.Body), conn: used}
			switch line, err := streams[i].br.ReadString('\n'); {
			case resp.StatusCode != http.StatusOK || resp.Proto != proto:
				errs[i] = errors.New("status " + resp.Status + " over " + resp.Proto + ", want 200 over " + proto)
			case err != nil || !strings.HasPrefix(line, "retry:"):
				errs[i] = errors.New("first line " + line + ", want retry:")
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range streams {
			if s.resp != nil {
				s.resp.Body.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("opening %d streams: %v", n, err)
	}
	return streams
}

// nextData returns the data: line of the next event on s.
func (s stream) nextData() (string, error) {
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			return data, nil
		}
	}
}

// publishAndReceive publishes one event on topic with client and checks
// that every stream gets it.
func publishAndReceive(t *testing.T, client *http.Client, baseURL, topic string, streams []stream) {
	t.Helper()
	resp, err := client.Post(baseURL+"/v1/publish", "application/json", strings.NewReader(`{"topic":"`+topic+`","data":"to all"}`))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	var pub struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&pub)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || pub.ID == "" {
		t.Fatalf("publish: status %d, %v", resp.StatusCode, err)
	}
	for i, s := range streams {
		data, err := s.nextData()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		var ev struct{ ID, Topic, Data string }
		if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.ID != pub.ID || ev.Topic != topic || ev.Data != "to all" {
			t.Fatalf("stream %d got %s (%v), want event %s", i, data, err, pub.ID)
		}
	}
}

// slowConsumers returns the server's count of clients dropped as slow
// consumers.
func slowConsumers(t *testing.T, in *heraldtest.Node) int64 {
	t.Helper()
	return in.Stats(t).SlowKicked
}

// wsSubscribeAndReceive opens a WebSocket with opts, subscribes to topic,
// publishes an event with in.Client and reads it from the WebSocket. It
// returns the handshake's response.
func wsSubscribeAndReceive(ctx context.Context, t *testing.T, in *heraldtest.Node, wsURL string, opts *websocket.DialOptions, topic string) *http.Response {
	t.Helper()
	opts.Subprotocols = []string{"herald.v1"}
	c, resp, err := websocket.Dial(ctx, wsURL+"/v1/ws", opts)
	if err != nil {
		t.Fatalf("WebSocket to %s: %v", wsURL, err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"1","topics":["`+topic+`"]}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, msg, err := c.Read(ctx); err != nil || !bytes.Contains(msg, []byte(`"op":"ok"`)) {
		t.Fatalf("subscribe reply %s, %v", msg, err)
	}
	if status, body := in.Post(t, "/v1/publish", `{"topic":"`+topic+`","data":"over ws"}`); status != http.StatusOK {
		t.Fatalf("publish: status %d, body %s", status, body)
	}
	_, msg, err := c.Read(ctx)
	var ev struct{ Op, Topic, Data string }
	if err != nil || json.Unmarshal(msg, &ev) != nil || ev.Op != "event" || ev.Topic != topic || ev.Data != "over ws" {
		t.Fatalf("event %s, %v", msg, err)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	return resp
}

// manyStreams is how many SSE streams the tests open over one HTTP/2
// connection: far more than the six connections per origin a browser
// allows itself over HTTP/1.1.
const manyStreams = 50
