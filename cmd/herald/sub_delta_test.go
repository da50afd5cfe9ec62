package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// counter is a TCP proxy to a server that counts the bytes the server
// sends: what a client's connection carries. Its goroutines end with the
// test.
type counter struct {
	ln    net.Listener
	bytes atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startCounter(t *testing.T, target string) *counter {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			if err != nil {
				client.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, client, server)
			c.mu.Unlock()
			c.wg.Add(2)
			go func() {
				defer c.wg.Done()
				n, _ := io.Copy(client, server)
				c.bytes.Add(n)
				client.Close()
			}()
			go func() {
				defer c.wg.Done()
				_, _ = io.Copy(server, client)
				server.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		c.mu.Lock()
		for _, cn := range c.conns {
			cn.Close()
		}
		c.mu.Unlock()
		c.wg.Wait()
	})
	return c
}

func (c *counter) URL() string { return "http://" + c.ln.Addr().String() }

// TestSubDeltaEndToEnd runs herald sub with and without --delta, over both
// transports, against a real server publishing a 4 KB keyed event whose
// one field changes: every run prints the same full envelopes, and the
// --delta runs' connections carry a fraction of the bytes (the server sent
// deltas, which sub applied).
func TestSubDeltaEndToEnd(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	type run struct {
		sub   *subRun
		count *counter
	}
	runs := map[string]run{}
	for _, tr := range transports {
		for _, mode := range []string{"full", "delta"} {
			c := startCounter(t, in.URL)
			args := []string{"--url", c.URL(), "--transport", tr, "--topic", "dash.*"}
			if mode == "delta" {
				args = append(args, "--delta")
			}
			r := run{startSub(t, args...), c}
			r.sub.waitSubscribed(t, 1)
			runs[tr+" "+mode] = r
		}
	}
	const n = 12
	var ids, data []string
	for i := range n {
		d := payload.Dashboard(i)
		status, body := in.Post(t, "/v1/publish", `{"topic":"dash.ops","type":"board","key":"main","data":`+d+`}`)
		if status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		var r struct{ ID string }
		_ = json.Unmarshal(body, &r)
		ids, data = append(ids, r.ID), append(data, d)
	}
	var first []string
	for name, r := range runs {
		t.Run(name, func(t *testing.T) {
			lines := r.sub.waitLines(t, n)
			checkEvents(t, lines, ids, data)
			for i, l := range lines {
				if strings.Contains(l, `"delta"`) {
					t.Errorf("line %d has a delta", i)
				}
			}
			if first == nil {
				first = lines
			} else if strings.Join(lines, "\n") != strings.Join(first, "\n") {
				t.Errorf("prints other lines than another run")
			}
		})
	}
	for _, tr := range transports {
		full, dl := runs[tr+" full"].count, runs[tr+" delta"].count
		// Every event was printed: what is counted is all the server sent.
		fb, db := full.bytes.Load(), dl.bytes.Load()
		for _, r := range []run{runs[tr+" full"], runs[tr+" delta"]} {
			if err := r.sub.stop(t); err != nil {
				t.Errorf("%s: %v", tr, err)
			}
		}
		// Copies end when the subscriber's connection closes.
		wait.For(t, 5*time.Second, "the proxies to count every byte", func() bool {
			fb, db = full.bytes.Load(), dl.bytes.Load()
			return fb > int64(n*len(data[0])) && db > 0
		})
		t.Logf("%s: %d bytes with full data, %d with deltas", tr, fb, db)
		if db*3 > fb {
			t.Errorf("%s: --delta's connection carried %d bytes, full data's %d: no deltas sent?", tr, db, fb)
		}
	}
}

// TestSubConflate: with --conflate, a key published to in a burst prints
// far fewer lines than events, the last one being the latest event, over
// both transports.
func TestSubConflate(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	subs := map[string]*subRun{}
	for _, tr := range transports {
		subs[tr] = startSub(t, "--url", in.URL, "--transport", tr, "--topic", "dash.*", "--conflate", "2s", "--delta")
		subs[tr].waitSubscribed(t, 1)
	}
	const n = 30
	var last string
	for i := range n {
		status, body := in.Post(t, "/v1/publish", `{"topic":"dash.ops","type":"board","key":"main","data":`+payload.Dashboard(i)+`}`)
		if status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		last = string(body)
	}
	var r struct{ ID string }
	_ = json.Unmarshal([]byte(last), &r)
	for _, tr := range transports {
		s := subs[tr]
		wait.For(t, 10*time.Second, tr+": the latest event", func() bool { return strings.Contains(s.stdout.String(), `"id":"`+r.ID+`"`) })
		lines := s.lines()
		if len(lines) >= n/2 {
			t.Errorf("%s: %d lines for %d events in a burst: not conflated", tr, len(lines), n)
		}
		var e hub.Event
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &e); err != nil || e.ID.String() != r.ID || string(e.Data) != payload.Dashboard(n-1) {
			t.Errorf("%s: last line %.80s, want event %s with the latest data", tr, lines[len(lines)-1], r.ID)
		}
	}
}
