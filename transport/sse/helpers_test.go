package sse_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a hub with the SSE handler mounted at /v1/events on a real
// HTTP server, and an HTTP client whose connections the cleanup closes.
type fixture struct {
	t      testing.TB
	hub    *hub.Hub
	sse    *sse.Handler
	srv    *httptest.Server
	tr     *http.Transport
	client *http.Client
	once   sync.Once
}

func newFixture(t testing.TB, ho hub.Options, so sse.Options) *fixture {
	t.Helper()
	return newFixtureOn(t, ho, so, nil)
}

// newFixtureOn is newFixture with the server's listener wrapped by wrap.
func newFixtureOn(t testing.TB, ho hub.Options, so sse.Options, wrap func(net.Listener) net.Listener) *fixture {
	t.Helper()
	h, err := hub.New(ho)
	if err != nil {
		t.Fatalf("failed to start hub: %v", err)
	}
	so.Hub = h
	mux := http.NewServeMux()
	sh := sse.New(so)
	mux.Handle("/v1/events", sh)
	srv := httptest.NewUnstartedServer(mux)
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	f := &fixture{t: t, hub: h, sse: sh, srv: srv, tr: tr, client: &http.Client{Transport: tr}}
	t.Cleanup(f.close)
	return f
}

// close ends every stream (hub.Shutdown), then the server, then the hub.
// Idempotent.
func (f *fixture) close() { f.once.Do(f.shutdown) }

func (f *fixture) shutdown() {
	f.hub.Shutdown()
	f.tr.CloseIdleConnections()
	f.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.sse.Wait(ctx); err != nil {
		f.t.Errorf("streams did not end: %v", err)
	}
	if err := f.hub.Close(ctx); err != nil {
		f.t.Errorf("failed to close hub: %v", err)
	}
}

// url returns the stream URL for the patterns plus extra query pairs.
func (f *fixture) url(patterns []string, extra ...string) string {
	q := url.Values{}
	for _, p := range patterns {
		q.Add("topic", p)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return f.srv.URL + "/v1/events?" + q.Encode()
}

// get sends a GET and returns the response; the caller closes the body.
func (f *fixture) get(ctx context.Context, rawURL string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return f.client.Do(req)
}

// frame is one parsed SSE frame (event or comment block).
type frame struct {
	Raw     string // the frame as received, including the blank line
	ID      string
	Event   string
	Data    string
	Retry   string
	Comment string
	hasID   bool
}

// stream reads frames from an open event stream.
type stream struct {
	t      testing.TB
	resp   *http.Response
	br     *bufio.Reader
	cancel context.CancelFunc
	start  string // the start block's cursor, if the stream has one
}

// open connects with a 20 s ceiling on the whole stream and asserts 200 and
// the retry preamble.
func (f *fixture) open(patterns []string, hdr http.Header, extra ...string) *stream {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	resp, err := f.get(ctx, f.url(patterns, extra...), hdr)
	if err != nil {
		cancel()
		f.t.Fatalf("failed to open stream: %v", err)
	}
	s := &stream{t: f.t, resp: resp, br: bufio.NewReader(resp.Body), cancel: cancel}
	f.t.Cleanup(s.close)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("status %d, body %s", resp.StatusCode, b)
	}
	if fr := s.next(); fr.Retry == "" {
		f.t.Fatalf("first frame %q is not the retry hint", fr.Raw)
	}
	if startsAt(patterns, hdr, extra) {
		fr := s.next()
		if !isStart(fr) {
			f.t.Fatalf("frame %q after the retry hint is not the start block", fr.Raw)
		}
		s.start = fr.ID
	}
	return s
}

// startsAt reports whether a stream opened with these arguments begins
// with a start block: one without a cursor and without state.
func startsAt(patterns []string, hdr http.Header, extra []string) bool {
	for k, v := range hdr { // tests write the key as the SPEC does, not canonical
		if strings.EqualFold(k, "Last-Event-ID") && len(v) > 0 && v[0] != "" {
			return false
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if k, v := extra[i], extra[i+1]; k == "last_event_id" && v != "" || k == "state" && v == "1" {
			return false
		}
	}
	return true
}

// isStart reports whether fr is a start block: only "id: CURSOR".
func isStart(fr frame) bool {
	_, err := hub.ParseCursor(fr.ID)
	return err == nil && fr.Raw == "id: "+fr.ID+"\n\n"
}

// readStart reads the start block that follows the retry hint of a stream
// opened without a cursor and without state, and returns its cursor.
func readStart(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	fr, err := readFrame(br)
	if err != nil || !isStart(fr) {
		t.Fatalf("frame %q, %v; want the start block", fr.Raw, err)
	}
	return fr.ID
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next frame or fails the test.
func (s *stream) next() frame {
	s.t.Helper()
	fr, err := readFrame(s.br)
	if err != nil {
		s.t.Fatalf("failed to read frame: %v", err)
	}
	return fr
}

// nextEvent skips comments and returns the next frame with an event.
func (s *stream) nextEvent() frame {
	s.t.Helper()
	for {
		if fr := s.next(); fr.Event != "" {
			return fr
		}
	}
}

// readFrame reads lines up to a blank line. A clean EOF before any line is io.EOF.
func readFrame(br *bufio.Reader) (frame, error) {
	var fr frame
	var raw strings.Builder
	for {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			if err == io.EOF && raw.Len() == 0 {
				return fr, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fr, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if raw.Len() == 1 {
				raw.Reset() // stray blank line
				continue
			}
			fr.Raw = raw.String()
			return fr, nil
		}
		parseField(&fr, line)
	}
}

func parseField(fr *frame, line string) {
	if c, ok := strings.CutPrefix(line, ":"); ok {
		fr.Comment = strings.TrimPrefix(c, " ")
		return
	}
	name, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	switch name {
	case "id":
		fr.ID, fr.hasID = value, true
	case "event":
		fr.Event = value
	case "data":
		if fr.Data != "" {
			fr.Data += "\n"
		}
		fr.Data += value
	case "retry":
		fr.Retry = value
	}
}

// parseRaw parses one event block as returned by sse.EventStreamReader.
func parseRaw(b []byte) frame {
	var fr frame
	fr.Raw = string(b)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) > 0 {
			parseField(&fr, string(line))
		}
	}
	return fr
}

// envelope is the decoded data of an event frame.
type envelope struct {
	ID    string          `json:"id"`
	Topic string          `json:"topic"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	Time  time.Time       `json:"time"`
}

type resetData struct {
	Reason string   `json:"reason"`
	Topics []string `json:"topics"`
}

// expectFrame returns the exact bytes SPEC prescribes for m.
func expectFrame(m *hub.Message) string {
	return "id: " + m.ID.String() + "\nevent: " + m.Type + "\ndata: " + string(m.Envelope()) + "\n\n"
}

func publish(t testing.TB, h *hub.Hub, topic, typ, data string) *hub.Message {
	t.Helper()
	ms, err := h.Publish(context.Background(), hub.Draft{Topic: topic, Type: typ, Data: json.RawMessage(data)})
	if err != nil {
		t.Fatalf("failed to publish to %s: %v", topic, err)
	}
	return ms[0]
}

// seqOf parses a cursor and returns its sequence number.
func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	c, err := hub.ParseCursor(id)
	if err != nil {
		t.Fatalf("bad cursor %q: %v", id, err)
	}
	return c.Seq
}

// sseClients returns the hub's count of open SSE clients.
func sseClients(h *hub.Hub) int64 { return h.Stats().Clients["sse"] }

// rawGet opens a TCP connection and sends a bare HTTP/1.1 GET.
func rawGet(t testing.TB, addr, target string, hdr ...string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("failed to dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", target, addr)
	for _, h := range hdr {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatalf("failed to send request: %v", err)
	}
	return conn
}

// smallSendBuffers gives every accepted connection a fixed, small kernel
// send buffer, so how much a stalled client can absorb does not depend on
// the machine's TCP autotuning (megabytes on loopback).
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetWriteBuffer(32 << 10); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, err
}
