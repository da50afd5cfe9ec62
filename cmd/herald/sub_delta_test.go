package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// frames builds event frames as the server writes them: the envelope of
// hub.Event, and for a delta the same envelope with "delta" in place of
// "data".
type frames struct {
	t    *testing.T
	seq  uint64
	last map[string][]byte
}

func (f *frames) full(topic, key, data string) []byte {
	f.seq++
	e := hub.Event{ID: hub.Cursor{Epoch: "e1", Seq: f.seq}, Topic: topic, Type: "board", Key: key,
		Data: json.RawMessage(data), Time: time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)}
	if f.last == nil {
		f.last = map[string][]byte{}
	}
	f.last[topic+"\n"+key] = []byte(data)
	return e.AppendJSON(nil)
}

// withDelta is the frame of data as a delta from base.
func (f *frames) withDelta(topic, key, base, data string) []byte {
	f.t.Helper()
	d, ok := delta.Create([]byte(base), []byte(data))
	if !ok {
		f.t.Fatalf("no delta from %.40s to %.40s", base, data)
	}
	full := string(f.full(topic, key, data))
	ds, _ := json.Marshal(string(d))
	i, j := strings.Index(full, `"data":`), strings.LastIndex(full, `,"time":"`)
	return []byte(full[:i] + `"delta":` + string(ds) + full[j:])
}

// TestSubDeltaApply feeds the subscriber the frames a --delta connection
// gets: deltas print as full envelopes, keys and topics keep their own
// bases, an event printed before still becomes the base, and a delta that
// does not apply (another base, no base, after a reset) prints nothing and
// ends the connection with an error, so that the next one resumes.
func TestSubDeltaApply(t *testing.T) {
	var out, errs bytes.Buffer
	s := &subscriber{cfg: subConfig{delta: true}, stdout: &out, stderr: &errs}
	f := &frames{t: t}
	want := []string{}
	feed := func(frame []byte, data string) {
		t.Helper()
		if err := s.event(frame); err != nil {
			t.Fatalf("event %s: %v", frame, err)
		}
		want = append(want, data)
	}
	feed(f.full("dash.ops", "main", payload.Dashboard(1)), payload.Dashboard(1))
	feed(f.withDelta("dash.ops", "main", payload.Dashboard(1), payload.Dashboard(2)), payload.Dashboard(2))
	feed(f.full("dash.ops", "side", payload.Dashboard(100)), payload.Dashboard(100))
	feed(f.withDelta("dash.ops", "main", payload.Dashboard(2), payload.Dashboard(3)), payload.Dashboard(3))
	feed(f.withDelta("dash.ops", "side", payload.Dashboard(100), payload.Dashboard(101)), payload.Dashboard(101))
	feed(f.full("dash.dev", "main", payload.Dashboard(7)), payload.Dashboard(7))
	feed(f.withDelta("dash.dev", "main", payload.Dashboard(7), payload.Dashboard(8)), payload.Dashboard(8))
	// Unkeyed events never go through the bases.
	feed(f.full("dash.ops", "", `{"note":"no key"}`), `{"note":"no key"}`)

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("printed %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, l := range lines {
		var e hub.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if string(e.Data) != want[i] {
			t.Errorf("line %d: data %.60s…, want %.60s…", i, e.Data, want[i])
		}
		if strings.Contains(l, `"delta"`) {
			t.Errorf("line %d has a delta: %.100s", i, l)
		}
		if b := e.AppendJSON(nil); string(b) != l {
			t.Errorf("line %d is not the canonical envelope", i)
		}
	}

	// A replayed event (already printed) is not printed again but is the
	// next delta's base.
	out.Reset()
	s.last = hub.Cursor{Epoch: "e1", Seq: f.seq + 1}
	if err := s.event(f.full("dash.ops", "main", payload.Dashboard(50))); err != nil {
		t.Fatal(err)
	}
	s.last = hub.Cursor{Epoch: "e1", Seq: f.seq}
	if err := s.event(f.withDelta("dash.ops", "main", payload.Dashboard(50), payload.Dashboard(51))); err != nil {
		t.Fatalf("a delta on a replayed base: %v", err)
	}
	if got := out.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, `{"n":51,`) {
		t.Fatalf("printed %q, want the one event with n 51", got)
	}

	refused := map[string][]byte{
		"another base": f.withDelta("dash.ops", "main", strings.ReplaceAll(payload.Dashboard(51), "région", "zone"), payload.Dashboard(52)),
		"no base":      f.withDelta("dash.ops", "other", payload.Dashboard(1), payload.Dashboard(2)),
		"garbage":      []byte(`{"id":"e1-999","topic":"dash.ops","type":"board","key":"main","delta":"3\n3@~~~~~,0;","time":"2026-12-06T13:00:00Z"}`),
		"neither":      []byte(`{"id":"e1-999","topic":"dash.ops","type":"board","key":"main","time":"2026-12-06T13:00:00Z"}`),
	}
	for name, frame := range refused {
		t.Run(name, func(t *testing.T) {
			out.Reset()
			s.bases.set("dash.ops\nmain", []byte(payload.Dashboard(51)))
			before := s.last
			err := s.event(frame)
			if err == nil {
				t.Fatalf("accepted, printed %q", out.String())
			}
			var fe *fatalError
			if errors.As(err, &fe) {
				t.Errorf("fatal error %v: the subscriber would stop instead of reconnecting", err)
			}
			if out.Len() != 0 || s.last != before {
				t.Errorf("printed %q, resume point %v (was %v)", out.String(), s.last, before)
			}
		})
	}

	// After a reset every key comes whole: a delta on an old base is refused.
	s.bases.set("dash.ops\nmain", []byte(payload.Dashboard(51)))
	if err := s.reset("e1-500", []byte(`{"reason":"gap","topics":["dash.ops"]}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.event(f.withDelta("dash.ops", "main", payload.Dashboard(51), payload.Dashboard(52))); err == nil {
		t.Error("a delta after a reset was applied to the base from before it")
	}
}

// TestDeltaBasesBounded: a connection's bases stay within their bounds,
// forgetting keys (whose deltas then restart the connection) rather than
// growing.
func TestDeltaBasesBounded(t *testing.T) {
	var b deltaBases
	for i := range maxDeltaBases + 100 {
		b.set(fmt.Sprintf("t\nk%d", i), []byte(`{"v":1}`))
	}
	if len(b.m) != maxDeltaBases {
		t.Errorf("%d bases kept, want %d", len(b.m), maxDeltaBases)
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	for i := range 100 {
		b.set(fmt.Sprintf("t\nbig%d", i), big)
	}
	n := 0
	for k, v := range b.m {
		n += len(k) + len(v)
	}
	if n != b.bytes || b.bytes > maxDeltaBaseBytes {
		t.Errorf("bases hold %d bytes (counted %d), bound %d", n, b.bytes, maxDeltaBaseBytes)
	}
	b.clear()
	if len(b.m) != 0 || b.bytes != 0 {
		t.Errorf("after clear: %d bases, %d bytes", len(b.m), b.bytes)
	}
}

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
