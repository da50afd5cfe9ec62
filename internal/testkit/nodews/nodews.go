// Package nodews drives a third-party WebSocket client, the npm ws package
// (client.mjs, the most used WebSocket library of Node.js), against a
// Herald server: tests send it messages and read what it receives.
//
// `make test` installs the package (make testdeps: npm ci in this
// directory); a test using it fails, not skips, when it is missing.
package nodews

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Client is a running client.mjs. Send and Next are for the test's
// goroutine.
type Client struct {
	stdin io.WriteCloser
	lines chan string   // stdout, closed when it ends
	done  chan struct{} // closed at cleanup: the stdout reader stops waiting for the test
	cmd   *exec.Cmd
}

// dir is this package's directory, where client.mjs and node_modules are.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Options are the ws package's client options that tests set; the zero
// value is ws's defaults.
type Options struct {
	// PerMessageDeflate is ws's perMessageDeflate: nil for its default
	// (offered, client messages of 1 KiB or more compressed), false not to
	// offer it, or an object such as map[string]any{"threshold": 0} to
	// compress every client message.
	PerMessageDeflate any `json:"perMessageDeflate,omitempty"`
}

// Dial starts client.mjs against url (ws://…) and waits for it to connect.
// It returns the client and the extensions negotiated, as the server's
// Sec-WebSocket-Extensions header has them ("-" for none).
// The process is stopped when the test ends.
func Dial(t testing.TB, url string) (*Client, string) {
	t.Helper()
	return DialWith(t, url, Options{})
}

// DialWith is Dial with ws's client options o.
func DialWith(t testing.TB, url string, o Options) (*Client, string) {
	t.Helper()
	opts, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("failed to find node (make testdeps installs it): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir(), "node_modules", "ws")); err != nil {
		t.Fatalf("the npm ws package is not installed: run make testdeps (%v)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir(), "client.mjs"), url, string(opts))
	cmd.Dir = dir()
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start node: %v", err)
	}
	c := &Client{stdin: stdin, lines: make(chan string, 1024), done: make(chan struct{}), cmd: cmd}
	// The reader is the test's: it ends when node's stdout does, and does
	// not wait for a test that stopped reading once the test has ended.
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			case <-c.done:
				_, _ = io.Copy(io.Discard, stdout) // let node finish writing and exit
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(c.done)
		_ = stdin.Close()
		select {
		case <-read:
		case <-time.After(10 * time.Second):
			cancel() // kill node: its stdout ends
			<-read
		}
		_ = cmd.Wait() // after every read, as os/exec requires
		cancel()
	})
	first := c.Next(t, 10*time.Second)
	ext, ok := strings.CutPrefix(first, "open ")
	if !ok {
		t.Fatalf("the ws client did not connect: %s", first)
	}
	return c, ext
}

// Send sends one text message (one line of JSON).
func (c *Client) Send(t testing.TB, msg string) {
	t.Helper()
	if _, err := fmt.Fprintln(c.stdin, msg); err != nil {
		t.Fatalf("failed to send to the ws client: %v", err)
	}
}

// Next returns the next line the client printed: a message received, or
// "closed CODE" / "error …". It fails t after d.
func (c *Client) Next(t testing.TB, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatal("the ws client ended")
		}
		return l
	case <-time.After(d):
		t.Fatalf("nothing from the ws client within %v", d)
		return ""
	}
}

// Close ends the client's input: it closes the connection with 1000.
func (c *Client) Close() { _ = c.stdin.Close() }

// NextJSON is Next for a message that must be one JSON object, decoded.
func (c *Client) NextJSON(t testing.TB, d time.Duration) map[string]any {
	t.Helper()
	line := c.Next(t, d)
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("ws received %q: not JSON: %v", line, err)
	}
	return m
}
