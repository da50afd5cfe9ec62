package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
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

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// subRun is a runSub running in a goroutine until stop or the test's end.
type subRun struct {
	stdout, stderr *heraldtest.Log
	cancel         context.CancelFunc
	done           chan error
}

func startSub(t *testing.T, args ...string) *subRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subRun{stdout: &heraldtest.Log{}, stderr: &heraldtest.Log{}, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- runSub(ctx, args, s.stdout, s.stderr) }()
	t.Cleanup(func() {
		select {
		case err := <-s.done: // ended by itself; the test judged the result
			s.done <- err
			cancel()
		default:
			if err := s.stop(t); err != nil {
				t.Errorf("runSub after cancel: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("sub stderr:\n%s", s.stderr)
		}
	})
	return s
}

// stop cancels runSub and returns its result; it may be called again.
func (s *subRun) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("runSub did not return within 5s of cancel")
		return nil
	}
}

// result waits for runSub to return by itself.
func (s *subRun) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("runSub did not return within 10s\nstderr: %s", s.stderr)
		return nil
	}
}

// lines returns the complete lines printed so far.
func (s *subRun) lines() []string {
	out := s.stdout.String()
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		return strings.Split(out[:i], "\n")
	}
	return nil
}

func (s *subRun) waitLines(t *testing.T, n int) []string {
	t.Helper()
	wait.For(t, 10*time.Second, "the subscriber to print events", func() bool { return len(s.lines()) >= n })
	return s.lines()
}

func (s *subRun) waitSubscribed(t *testing.T, times int) {
	t.Helper()
	wait.For(t, 10*time.Second, "the subscription to be live", func() bool {
		return strings.Count(s.stderr.String(), "subscribed to ") >= times
	})
}

// publish publishes one event per data value on topic and returns the cursors.
func publish(t *testing.T, in *heraldtest.Node, topic string, data ...string) []string {
	t.Helper()
	var ids []string
	for _, d := range data {
		status, body := in.Post(t, "/v1/publish", `{"topic":"`+topic+`","type":"test.event","data":`+d+`}`)
		if status != http.StatusOK {
			t.Fatalf("publish: status %d, body %s", status, body)
		}
		var r struct{ ID string }
		if err := json.Unmarshal(body, &r); err != nil || r.ID == "" {
			t.Fatalf("publish body %s: %v", body, err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// checkEvents checks that lines are envelopes with the given ids and data.
func checkEvents(t *testing.T, lines, ids, data []string) {
	t.Helper()
	if len(lines) != len(ids) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(ids), strings.Join(lines, "\n"))
	}
	for i, l := range lines {
		var e hub.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d %q is not an event envelope: %v", i, l, err)
		}
		if e.ID.String() != ids[i] || string(e.Data) != data[i] {
			t.Errorf("line %d: id %s data %s, want id %s data %s", i, e.ID, e.Data, ids[i], data[i])
		}
		if b, _ := e.MarshalJSON(); string(b) != l {
			t.Errorf("line %d %q is not the canonical envelope %s", i, l, b)
		}
	}
}

var transports = []string{"ws", "sse"}

func TestSubReceives(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	subs := map[string]*subRun{}
	for _, tr := range transports {
		subs[tr] = startSub(t, "--url", in.URL, "--transport", tr, "--topic", "orders.*", "--topic", "audit")
		subs[tr].waitSubscribed(t, 1)
	}
	ids := publish(t, in, "orders.1", `{"n":1}`)
	publish(t, in, "other.1", `"not subscribed"`)
	ids = append(ids, publish(t, in, "audit", `[1,2]`, `"x"`)...)
	ids = append(ids, publish(t, in, "orders.2", `null`)...)
	data := []string{`{"n":1}`, `[1,2]`, `"x"`, `null`}

	got := map[string][]string{}
	for _, tr := range transports {
		got[tr] = subs[tr].waitLines(t, len(ids))
		t.Run(tr, func(t *testing.T) { checkEvents(t, got[tr], ids, data) })
	}
	if strings.Join(got["ws"], "\n") != strings.Join(got["sse"], "\n") {
		t.Errorf("transports print different lines:\nws:\n%s\nsse:\n%s", strings.Join(got["ws"], "\n"), strings.Join(got["sse"], "\n"))
	}
	for _, tr := range transports {
		if err := subs[tr].stop(t); err != nil {
			t.Errorf("%s: runSub after cancel = %v, want nil (exit 0)", tr, err)
		}
		if strings.Contains(subs[tr].stdout.String(), "subscribed") {
			t.Errorf("%s: diagnostics on stdout", tr)
		}
	}
}

func TestSubPretty(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	s := startSub(t, "--url", in.URL, "--transport", "sse", "--topic", "orders.>", "--format", "pretty")
	s.waitSubscribed(t, 1)
	ids := publish(t, in, "orders.eu.1", `{"total":12.5}`)
	wait.For(t, 10*time.Second, "a pretty event", func() bool { return strings.Contains(s.stdout.String(), "}\n") })
	out := s.stdout.String()
	for _, want := range []string{"orders.eu.1", "test.event", ids[0], "\n  {\n    \"total\": 12.5\n  }\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("pretty output %q does not contain %q", out, want)
		}
	}
}

func TestSubSince(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	ids := publish(t, in, "orders.1", "1", "2", "3")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := startSub(t, "--url", in.URL, "--transport", tr, "--topic", "orders.*", "--since", ids[0])
			checkEvents(t, s.waitLines(t, 2), ids[1:], []string{"2", "3"})
		})
	}
}

// TestSubRewind: --rewind N prints the newest N retained events of the
// topics, then live ones; --since wins over it.
func TestSubRewind(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	ids := publish(t, in, "orders.1", "1", "2", "3")
	publish(t, in, "other", "0")
	ids = append(ids, publish(t, in, "orders.2", "4")...)
	data := []string{"1", "2", "3", "4"}
	for i, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := len(ids)
			s := startSub(t, "--url", in.URL, "--transport", tr, "--topic", "orders.*", "--rewind", "2")
			checkEvents(t, s.waitLines(t, 2), ids[n-2:], data[n-2:])
			ids = append(ids, publish(t, in, "orders.3", fmt.Sprint(5+i))...)
			data = append(data, fmt.Sprint(5+i))
			checkEvents(t, s.waitLines(t, 3), ids[n-2:], data[n-2:])

			s = startSub(t, "--url", in.URL, "--transport", tr, "--topic", "orders.*", "--rewind", "1", "--since", ids[0])
			checkEvents(t, s.waitLines(t, len(ids)-1), ids[1:], data[1:])
		})
	}
}

// TestSubResumesAfterCut: cut off after an event, or before any (it then
// resumes from where its subscription started), sub reconnects and prints
// what was published meanwhile, once.
func TestSubResumesAfterCut(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	for _, tr := range transports {
		for _, before := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/before-first-event=%v", tr, before), func(t *testing.T) {
				topic := fmt.Sprintf("cut.%s.%v", tr, before)
				p := relay.Start(t, in.URL[len("http://"):], relay.Options{})
				s := startSub(t, "--url", p.URL(), "--transport", tr, "--topic", topic)
				s.waitSubscribed(t, 1)
				var ids, data []string
				if !before {
					ids, data = publish(t, in, topic, "1"), []string{"1"}
					s.waitLines(t, 1)
				}
				p.Down()
				ids, data = append(ids, publish(t, in, topic, "2", "3")...), append(data, "2", "3")
				// Let it fail to reconnect at least once while the events wait.
				wait.For(t, 10*time.Second, "a failed reconnect", func() bool {
					return strings.Count(s.stderr.String(), "reconnecting in") >= 2
				})
				p.Up()
				s.waitSubscribed(t, 2)
				ids, data = append(ids, publish(t, in, topic, "4")...), append(data, "4")
				checkEvents(t, s.waitLines(t, len(ids)), ids, data)
				if err := s.stop(t); err != nil {
					t.Errorf("runSub after cancel: %v", err)
				}
				// Nothing more came after the last expected event.
				checkEvents(t, s.lines(), ids, data)
			})
		}
	}
}

func TestSubReset(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	publish(t, in, "orders.1", "0")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := startSub(t, "--url", in.URL, "--transport", tr, "--topic", "orders.*", "--since", "abcdefghij-5")
			wait.For(t, 10*time.Second, "the reset on stderr", func() bool {
				return strings.Contains(s.stderr.String(), "resuming from")
			})
			line := s.stderr.String()
			line = line[strings.Index(line, "reset: "):]
			if !strings.Contains(line, "[orders.*]") || strings.Contains(line, "abcdefghij-5") {
				t.Errorf("reset line %q should name the pattern and the server's cursor", line)
			}
			ids := publish(t, in, "orders.1", "1")
			checkEvents(t, s.waitLines(t, 1), ids, []string{"1"})
			if strings.Contains(s.stdout.String(), "reset") {
				t.Errorf("the reset leaked onto stdout: %q", s.stdout)
			}
		})
	}
}

func TestSubErrors(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	cases := []struct {
		name   string
		args   []string
		status int
		stderr string
	}{
		{"refused ws", []string{"--url", refused, "--topic", "a"}, 1, "cannot connect to " + refused + ": connection refused"},
		{"refused sse", []string{"--url", refused, "--transport", "sse", "--topic", "a"}, 1, "cannot connect to " + refused + ": connection refused"},
		{"no topic", []string{"--url", in.URL}, 2, "at least one --topic"},
		{"invalid pattern", []string{"--url", in.URL, "--topic", "orders..x"}, 2, "invalid --topic"},
		{"transport", []string{"--url", in.URL, "--topic", "a", "--transport", "pigeon"}, 2, "--transport must be ws or sse"},
		{"format", []string{"--url", in.URL, "--topic", "a", "--format", "xml"}, 2, "--format must be json or pretty"},
		{"since", []string{"--url", in.URL, "--topic", "a", "--since", "nope"}, 2, "invalid --since"},
		{"rewind", []string{"--url", in.URL, "--topic", "a", "--rewind", "1001"}, 2, "invalid --rewind"},
		{"rewind not a number", []string{"--url", in.URL, "--topic", "a", "--rewind", "1.5"}, 2, "invalid --rewind"},
		{"url", []string{"--url", "ftp://x", "--topic", "a"}, 2, "--url must start with"},
		{"conflate too short", []string{"--url", in.URL, "--topic", "a", "--conflate", "10ms"}, 2, "--conflate must be from 50ms to 60s"},
		{"conflate too long", []string{"--url", in.URL, "--topic", "a", "--conflate", "2m"}, 2, "--conflate must be from 50ms to 60s"},
		{"conflate not a duration", []string{"--url", in.URL, "--topic", "a", "--conflate", "soon"}, 2, "invalid value \"soon\" for flag -conflate"},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"not found", []string{"--url", in.URL + "/nowhere", "--transport", "sse", "--topic", "a"}, 1, "404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startSub(t, tc.args...)
			err := s.result(t)
			var stderr bytes.Buffer
			if got := exitStatus(err, &stderr); got != tc.status {
				t.Errorf("exit status %d, want %d (%v)", got, tc.status, err)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("error %q does not contain %q", &stderr, tc.stderr)
			}
			if s.stdout.String() != "" {
				t.Errorf("stdout %q, want nothing", s.stdout)
			}
		})
	}

	t.Run("help", func(t *testing.T) {
		var stdout bytes.Buffer
		if err := runSub(context.Background(), []string{"-h"}, &stdout, io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("-h: %v", err)
		}
		if !strings.Contains(stdout.String(), "-topic pattern") {
			t.Errorf("help %q does not list --topic", &stdout)
		}
	})
}

// TestSubServerRejects checks that an error answered by the server itself
// (more patterns than a connection may hold, which the client does not
// judge) ends sub with exit 1 and the server's code, on both transports,
// without retrying.
func TestSubServerRejects(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	var topics []string
	for i := range 257 {
		topics = append(topics, fmt.Sprintf("many.%d", i))
	}
	for tr, code := range map[string]string{"ws": "too_large", "sse": "invalid_pattern"} {
		t.Run(tr, func(t *testing.T) {
			s := &subscriber{
				cfg:    subConfig{base: mustURL(t, in.URL), transport: tr, topics: topics},
				stdout: io.Discard, stderr: io.Discard,
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := s.run(ctx)
			var stderr bytes.Buffer
			if got := exitStatus(err, &stderr); got != 1 || !strings.Contains(stderr.String(), code) {
				t.Errorf("exit status %d, error %q; want 1 and %s", got, &stderr, code)
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSubToken checks that --token goes out as a bearer token on both
// transports, and that a 401 answer ends sub at once with the server's error.
func TestSubToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	ts := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"code":"unauthorized","message":"token expired"}}`)
	}))
	for _, tr := range transports {
		s := startSub(t, "--url", ts, "--transport", tr, "--topic", "a", "--token", "tok.en")
		var stderr bytes.Buffer
		if got := exitStatus(s.result(t), &stderr); got != 1 || !strings.Contains(stderr.String(), "401 unauthorized: token expired") {
			t.Errorf("%s: exit status %d, error %q; want 1 and the server's error", tr, got, &stderr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(seen, "|"); got != "/v1/ws Bearer tok.en|/v1/events Bearer tok.en" {
		t.Errorf("requests %q, want one per transport with the bearer token", got)
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestSubState: --state prints the state of the topics (each key's latest
// event, oldest first), a synced line on stderr, then live events; after
// a reset (an unusable --since) the state comes again after the reset. On
// the memory broker and on NATS, whose state is derived from its log.
func TestSubState(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testSubState(t, "memory") })
	t.Run("nats", func(t *testing.T) { testSubState(t, natstest.BrokerURL(t)) })
	in := startServe(t, "--addr", "127.0.0.1:0")
	s := startSub(t, "--url", in.URL, "--topic", "a", "--state", "--rewind", "2")
	if err := s.result(t); err == nil || !strings.Contains(err.Error(), "exclude") {
		t.Errorf("--state with --rewind: %v", err)
	}
}

func testSubState(t *testing.T, broker string) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	var ids []string
	for _, ev := range []string{
		`{"topic":"doc.7","key":"a","data":1}`,
		`{"topic":"doc.7","key":"b","data":2}`,
		`{"topic":"doc.7","key":"a","data":3}`,
	} {
		status, body := in.Post(t, "/v1/publish", ev)
		if status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		var r struct{ ID string }
		_ = json.Unmarshal(body, &r)
		ids = append(ids, r.ID)
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			for _, since := range []string{"", "abcdefghij-5"} {
				args := []string{"--url", in.URL, "--transport", tr, "--topic", "doc.*", "--state"}
				if since != "" {
					args = append(args, "--since", since)
				}
				s := startSub(t, args...)
				checkEvents(t, s.waitLines(t, 2), ids[1:], []string{"2", "3"})
				wait.For(t, 10*time.Second, "the synced on stderr", func() bool {
					return strings.Contains(s.stderr.String(), "synced: state of [doc.*] at ")
				})
				if since != "" && !strings.Contains(s.stderr.String(), "reset: ") {
					t.Errorf("no reset before the state: %q", s.stderr)
				}
				live := publish(t, in, "doc.8", "9")
				checkEvents(t, s.waitLines(t, 3), append(ids[1:3:3], live...), []string{"2", "3", "9"})
				if err := s.stop(t); err != nil {
					t.Errorf("runSub after cancel: %v", err)
				}
			}
		})
	}
}
