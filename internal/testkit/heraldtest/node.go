// Package heraldtest runs Herald nodes in the test's process and talks to
// them as clients do, over real sockets: what the tests of the server and
// those of the herald command share.
package heraldtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Node is a server running in the test's process until the test ends or
// Stop is called. Its fields are set before Run returns and not changed.
type Node struct {
	URL    string // http://host:port
	Logs   *Log   // what the node logged, shown if the test fails
	Client *http.Client

	cancel context.CancelFunc
	done   chan error
}

// ServeFunc runs a server until ctx ends, logging to logs, and calls ready
// with its address once it listens. It returns when the server has
// stopped.
type ServeFunc func(ctx context.Context, logs io.Writer, ready func(addr string)) error

// Run runs serve on a goroutine of its own until the test ends (the
// cleanup cancels its context and waits for it), and returns once it
// listens.
func Run(t testing.TB, serve ServeFunc) *Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cancel: cancel, done: make(chan error, 1), Logs: &Log{}}
	addrc := make(chan string, 1)
	go func() {
		n.done <- serve(ctx, n.Logs, func(addr string) { addrc <- addr })
	}()
	select {
	case addr := <-addrc:
		n.URL = "http://" + addr
	case err := <-n.done:
		cancel()
		t.Fatalf("the server stopped before listening: %v\n%s", err, n.Logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("the server did not start listening within 10s\n%s", n.Logs)
	}
	tr := &http.Transport{}
	n.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		n.cancel()
		select {
		case err := <-n.done:
			n.done <- err
		case <-time.After(30 * time.Second):
			t.Errorf("the server did not stop 30s after its context ended")
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", n.Logs)
		}
	})
	return n
}

// Cancel ends the server's context, which starts its shutdown, and
// returns at once.
func (n *Node) Cancel() { n.cancel() }

// Stop ends the server's context and returns what the server returned and
// how long it took to stop, failing t if that is more than bound.
func (n *Node) Stop(t testing.TB, bound time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	n.cancel()
	select {
	case err := <-n.done:
		n.done <- err // for the cleanup
		return err, time.Since(start)
	case <-time.After(bound):
		t.Fatalf("the server did not stop within %v of cancel\n%s", bound, n.Logs)
		return nil, 0
	}
}

// Post posts a JSON body to path and returns the status and body.
func (n *Node) Post(t testing.TB, path, body string) (int, []byte) {
	t.Helper()
	resp, err := n.Client.Post(n.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Get returns the status and body of path.
func (n *Node) Get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := n.Client.Get(n.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// HistoryData returns the data of a topic's history, in order.
func (n *Node) HistoryData(t testing.TB, topic string) []string {
	t.Helper()
	status, body := n.Get(t, "/v1/topics/"+topic+"/history")
	if status != http.StatusOK {
		t.Fatalf("history: status %d, body %s", status, body)
	}
	var out struct {
		Events []struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("history body %s: %v", body, err)
	}
	var data []string
	for _, e := range out.Events {
		data = append(data, string(e.Data))
	}
	return data
}

// Log is a buffer that a server writes its log to while the test reads it.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Log) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Log) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
