package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
)

// trickle sends a request head and the start of its body on a raw
// connection, then nothing more, and returns the answer the server gives
// before it closes the connection (nil if it gives none). It fails if the
// connection is still open after 15 s: a body that never comes must not
// hold a connection for ever.
func (s *server) trickle(t *testing.T, head, start string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, head+"\r\n"+start); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the connection is still open 15 s later (read so far: %q)", strings.SplitN(head, "\r\n", 2)[0], got)
	}
	if len(got) == 0 {
		return nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
	if err != nil {
		t.Fatalf("the server answered %q: %v", got, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

// TestSlowBodyTimesOut sends request bodies that stop coming: each request
// is answered 408 request_timeout once the read timeout has passed, or its
// answer is sent and the connection closed, where the handler did not need
// the body.
func TestSlowBodyTimesOut(t *testing.T) {
	s := newServer(t, serverOptions{readTimeout: 300 * time.Millisecond, actions: &action.Options{Echo: true}})
	const json = "Host: herald\r\nContent-Type: application/json\r\n"
	for _, c := range []struct {
		name, head, start string
		status            int
	}{
		{"publish", "POST /v1/publish HTTP/1.1\r\n" + json + "Content-Length: 1048576\r\n", "{", http.StatusRequestTimeout},
		{"publish, chunked", "POST /v1/publish HTTP/1.1\r\n" + json + "Transfer-Encoding: chunked\r\n", "5\r\n{\"top", http.StatusRequestTimeout},
		{"action", "POST /v1/actions HTTP/1.1\r\n" + json + "Content-Length: 1000\r\n", `{"type":"echo",`, http.StatusRequestTimeout},
		{"a GET with a body", "GET /v1/topics HTTP/1.1\r\nHost: herald\r\nContent-Length: 1000\r\n", "x", http.StatusOK},
		{"no such route", "POST /v1/nope HTTP/1.1\r\n" + json + "Content-Length: 1000\r\n", "x", http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := s.trickle(t, c.head, c.start)
			if resp == nil {
				t.Fatal("the connection was closed without an answer")
			}
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.status == http.StatusRequestTimeout {
				body, _ := io.ReadAll(resp.Body)
				assertError(t, response{status: resp.StatusCode, header: resp.Header, body: body}, c.status, "request_timeout")
				if !resp.Close {
					t.Error("a 408 without Connection: close")
				}
			}
		})
	}
}

// TestSlowBodyCostsWhatArrived checks that a request announcing a large
// body holds memory for what has arrived, not for what it announced: a
// thousand such requests would otherwise hold a gigabyte.
func TestSlowBodyCostsWhatArrived(t *testing.T) {
	s := newServer(t, serverOptions{readTimeout: 300 * time.Millisecond})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s.trickle(t, "POST /v1/publish HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n", "{")
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
		t.Errorf("one request with a body of one byte so far allocated %d bytes", n)
	}
}

// TestReadTimeoutSparesStreams opens an SSE stream and a WebSocket, lets a
// read timeout pass (a trickled request on another connection is answered
// 408), and checks that both still deliver: the deadline is for request
// bodies, and streams live for hours.
func TestReadTimeoutSparesStreams(t *testing.T) {
	s := newServer(t, serverOptions{readTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?topic=spared", nil)
	resp, err := s.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: %v %v", resp, err)
	}
	defer resp.Body.Close()
	w := s.dialWS(t)
	w.send(t, `{"op":"subscribe","ref":1,"topics":["spared"]}`)
	if m := w.recv(t); string(m["op"]) != `"ok"` {
		t.Fatalf("subscribe: %v", m)
	}

	if r := s.trickle(t, "POST /v1/publish HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\nContent-Length: 100\r\n", "{"); r == nil || r.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("the trickled request: %v, want 408", r)
	}
	s.mustPublish(t, "spared", "", "1")
	awaitSSEEvent(t, bufio.NewReader(resp.Body), "spared")
	if m := w.recv(t); string(m["op"]) != `"event"` {
		t.Errorf("the WebSocket: %v, want the event", m)
	}
}

// awaitSSEEvent reads a stream until an event of topic arrives.
func awaitSSEEvent(t *testing.T, br *bufio.Reader, topic string) {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"topic":"`+topic+`"`) {
			return
		}
	}
}

// bigHistory publishes n events of size bytes of data each to topic.
func (s *server) bigHistory(t *testing.T, topic string, n, size int) {
	t.Helper()
	data := `"` + strings.Repeat("x", size) + `"`
	for range n {
		if r := s.publish(t, `{"topic":"`+topic+`","data":`+data+`}`); r.status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
	}
}

// TestStalledReaderTimesOut asks for a page of history megabytes long and
// never reads it: once the write timeout has passed with nothing taken,
// the server ends the request and closes the connection, rather than hold
// the handler, the response and the socket for as long as the client
// keeps its connection open.
func TestStalledReaderTimesOut(t *testing.T) {
	ended := make(chan struct{}, 1)
	s := newServer(t, serverOptions{writeTimeout: time.Second, observe: func(route string, code int, d time.Duration) {
		if route == "/v1/topics/{topic}/history" {
			ended <- struct{}{}
		}
	}})
	s.bigHistory(t, "big.t", 300, 60<<10) // 18 MB, far more than the sockets' buffers
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/topics/big.t/history?limit=1000 HTTP/1.1\r\nHost: herald\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Fatal("the request of a client that reads nothing has not ended 15 s later")
	}
	// The connection is closed: what the socket buffers held, then EOF
	// (or a reset), far short of the whole page.
	if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is still open after the request ended (%d bytes read)", n)
	}
	if n >= 300*60<<10 {
		t.Fatalf("read %d bytes: the whole page", n)
	}
}

// TestSlowReaderGetsLargeResponse reads a page of history of 16 MB, with
// a small receive buffer, at 64 KiB every 20 ms: about 5 s in all, five
// times the write timeout, of which the sockets' buffers (at most 4 MB on
// the server's side here) can take only a part. The deadline moves on as
// the response is written, so it arrives whole.
func TestSlowReaderGetsLargeResponse(t *testing.T) {
	s := newServer(t, serverOptions{writeTimeout: time.Second})
	s.bigHistory(t, "big.t", 256, 64<<10)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(s.url + "/v1/topics/big.t/history?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := io.ReadFull(resp.Body, buf)
		total += n
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("after %d bytes in %v: %v", total, time.Since(start), err)
			}
			break
		}
		time.Sleep(20 * time.Millisecond) // a slow reader, not synchronisation
	}
	if total < 256*64<<10 {
		t.Fatalf("read %d bytes, want the whole page", total)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("read in %v: not slower than the write timeout, the test proves nothing", took)
	}
}

// TestLargePageIsNotCopied: a page of history over a megabyte is written
// from the events themselves, not from a copy of them (concurrent
// requests for large pages would each hold one), and is the same JSON,
// with its length announced.
func TestLargePageIsNotCopied(t *testing.T) {
	s := newServer(t, serverOptions{})
	const n, size = 40, 60 << 10
	s.bigHistory(t, "big.c", n, size)
	s.bigHistory(t, "small.c", 3, 1000)
	for _, topic := range []string{"small.c", "empty.c"} {
		resp, err := http.Get(s.url + "/v1/topics/" + topic + "/history")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) || !json.Valid(body) {
			t.Errorf("%s: Content-Length %q for %d bytes: %s", topic, resp.Header.Get("Content-Length"), len(body), body)
		}
	}
	get := func() *http.Response {
		resp, err := http.Get(s.url + "/v1/topics/big.c/history?limit=1000")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q for %d bytes", resp.Header.Get("Content-Length"), len(body))
	}
	var page struct {
		Events []struct {
			ID   string
			Data string
		}
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Events) != n || len(page.Events[n-1].Data) != size {
		t.Fatalf("page of %d bytes: %d events, %v", len(body), len(page.Events), err)
	}

	var before, after runtime.MemStats
	const rounds = 3
	runtime.ReadMemStats(&before)
	for range rounds {
		resp := get()
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / rounds; per > uint64(len(body))/2 {
		t.Errorf("a request for a page of %d bytes allocated %d bytes", len(body), per)
	}
}
