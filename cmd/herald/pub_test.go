package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// cmdResult is what a user of the command sees.
type cmdResult struct {
	status         int
	stdout, stderr string
}

func pubCmd(t *testing.T, stdin string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	status := exitStatus(runPub(ctx, args, strings.NewReader(stdin), &stdout, &stderr), &stderr)
	return cmdResult{status, stdout.String(), stderr.String()}
}

// historyEvent is one event of GET /v1/topics/{t}/history.
type historyEvent struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func history(t *testing.T, in *heraldtest.Node, topic string) []historyEvent {
	t.Helper()
	status, body := in.Get(t, "/v1/topics/"+topic+"/history?limit=1000")
	if status != http.StatusOK {
		t.Fatalf("history of %s: status %d, body %s", topic, status, body)
	}
	var out struct{ Events []historyEvent }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("history body %s: %v", body, err)
	}
	return out.Events
}

func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestPubSingle(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	r := pubCmd(t, "", "--url", in.URL, "--topic", "pub.one", "--type", "greet", "--data", `{"hello": "world"}`)
	if r.status != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.status, r.stderr)
	}
	cursor := strings.TrimSuffix(r.stdout, "\n")
	if cursor == "" || strings.Contains(cursor, "\n") || !strings.HasSuffix(r.stdout, "\n") {
		t.Fatalf("stdout %q: want one cursor line", r.stdout)
	}
	h := history(t, in, "pub.one")
	if len(h) != 1 || h[0].ID != cursor || h[0].Type != "greet" || string(h[0].Data) != `{"hello":"world"}` {
		t.Errorf("history %+v, want the one event %s of type greet with the data", h, cursor)
	}
}

// TestPubStdin publishes 250 NDJSON lines, mixing whole events and bare
// data, through a proxy that counts the requests, so that batching shows.
func TestPubStdin(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	target, _ := url.Parse(in.URL)
	var posts atomic.Int32
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = in.Client.Transport
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	var input strings.Builder
	var wantData, wantType []string
	for i := range 250 {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&input, `{"topic":"pub.stream","type":"whole","data":{"n":%d}}`+"\n", i)
			wantType = append(wantType, "whole")
		case 1:
			fmt.Fprintf(&input, `{"topic":"pub.stream","data":{"n":%d}}`+"\n\n", i) // type from --type; blank line skipped
			wantType = append(wantType, "bare")
		case 2:
			fmt.Fprintf(&input, `  {"n":%d}  `+"\r\n", i) // an object without "topic" is data
			wantType = append(wantType, "bare")
		case 3:
			fmt.Fprintf(&input, `{"n" : %d}`, i) // the last line has no newline
			if i != 249 {
				input.WriteString("\n")
			}
			wantType = append(wantType, "bare")
		}
		wantData = append(wantData, fmt.Sprintf(`{"n":%d}`, i))
	}
	r := pubCmd(t, input.String(), "--url", proxy.URL, "--topic", "pub.stream", "--type", "bare")
	if r.status != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.status, r.stderr)
	}
	cursors := lines(r.stdout)
	if len(cursors) != 250 {
		t.Fatalf("got %d cursors, want 250", len(cursors))
	}
	h := history(t, in, "pub.stream")
	if len(h) != 250 {
		t.Fatalf("history has %d events, want 250", len(h))
	}
	for i, e := range h {
		if e.ID != cursors[i] || e.Type != wantType[i] || string(e.Data) != wantData[i] {
			t.Fatalf("event %d: %s %s %s; want cursor %s, type %s, data %s", i, e.ID, e.Type, e.Data, cursors[i], wantType[i], wantData[i])
		}
	}
	if n := posts.Load(); n != 3 {
		t.Errorf("%d publish requests, want 3 batches of at most 100", n)
	}
}

func TestPubErrors(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")

	t.Run("invalid topic", func(t *testing.T) {
		r := pubCmd(t, "", "--url", in.URL, "--topic", "bad topic", "--data", "1")
		if r.status != 1 || r.stdout != "" || !strings.Contains(r.stderr, "invalid_topic: ") || !strings.Contains(r.stderr, "HTTP 400") {
			t.Errorf("%+v: want exit 1 with invalid_topic and the HTTP status", r)
		}
	})
	t.Run("invalid topic in a later batch", func(t *testing.T) {
		r := pubCmd(t, strings.Repeat("1\n", 100)+`{"topic":"no way"}`+"\n", "--url", in.URL, "--topic", "pub.later")
		if r.status != 1 || len(lines(r.stdout)) != 100 || !strings.Contains(r.stderr, "invalid_topic") ||
			!strings.Contains(r.stderr, "the first 100 events were published") {
			t.Errorf("exit %d, %d lines, stderr %q: want exit 1, 100 cursors and what was published", r.status, len(lines(r.stdout)), r.stderr)
		}
	})
	t.Run("invalid JSON line", func(t *testing.T) {
		r := pubCmd(t, "1\n\n2\n{bad\n3\n", "--url", in.URL, "--topic", "pub.badline")
		if r.status != 1 || !strings.Contains(r.stderr, "line 4: not valid JSON") ||
			!strings.Contains(r.stderr, "the 2 events before it were published") {
			t.Errorf("%+v: want exit 1 naming line 4", r)
		}
		h := history(t, in, "pub.badline")
		if len(h) != 2 || string(h[0].Data) != "1" || string(h[1].Data) != "2" || r.stdout != h[0].ID+"\n"+h[1].ID+"\n" {
			t.Errorf("history %+v, stdout %q: want exactly the two events before the bad line", h, r.stdout)
		}
	})
	t.Run("invalid first line", func(t *testing.T) {
		r := pubCmd(t, "[1,\n2\n", "--url", in.URL, "--topic", "pub.badfirst")
		if r.status != 1 || r.stdout != "" || !strings.Contains(r.stderr, "line 1: not valid JSON") ||
			!strings.Contains(r.stderr, "nothing was published") {
			t.Errorf("%+v: want exit 1 naming line 1", r)
		}
		if h := history(t, in, "pub.badfirst"); len(h) != 0 {
			t.Errorf("history %+v, want empty", h)
		}
	})
	t.Run("line without topic", func(t *testing.T) {
		r := pubCmd(t, `{"topic":"pub.notopic","data":1}`+"\n"+`{"data":2}`+"\n", "--url", in.URL, "--stdin")
		if r.status != 1 || len(lines(r.stdout)) != 1 || !strings.Contains(r.stderr, `line 2: not an event object with "topic"`) {
			t.Errorf("%+v: want exit 1 naming line 2 after one cursor", r)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + ln.Addr().String()
		ln.Close()
		r := pubCmd(t, "", "--url", closed, "--topic", "pub.x", "--data", "1")
		if r.status != 1 || r.stderr != "herald: cannot connect to "+closed+": connection refused\n" {
			t.Errorf("%+v: want exit 1 with a plain message", r)
		}
		r = pubCmd(t, "1\n", "--url", closed+"/", "--topic", "pub.x")
		if r.status != 1 || !strings.Contains(r.stderr, "connection refused") {
			t.Errorf("stdin: %+v: want exit 1 with connection refused", r)
		}
	})
	t.Run("help", func(t *testing.T) {
		r := pubCmd(t, "", "-h")
		if r.status != 0 || !strings.Contains(r.stdout, "Usage: herald pub") || !strings.Contains(r.stdout, "-topic TOPIC") {
			t.Errorf("%+v: want usage on stdout", r)
		}
	})
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"no topic", []string{"--data", "1"}, "--data needs --topic"},
		{"nothing to publish", nil, "--topic is required"},
		{"bad data", []string{"--topic", "a", "--data", "{"}, "--data is not valid JSON"},
		{"data and stdin", []string{"--topic", "a", "--data", "1", "--stdin"}, "not both"},
		{"bad url", []string{"--url", "127.0.0.1:8080", "--topic", "a", "--data", "1"}, "must be an http:// or https:// URL"},
		{"batch", []string{"--topic", "a", "--batch", "0"}, "--batch must be between"},
		{"argument", []string{"--topic", "a", "extra"}, "takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := pubCmd(t, "1\n", append([]string{"--url", in.URL}, tc.args...)...)
			if r.status != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("%+v: want exit 2 mentioning %q", r, tc.stderr)
			}
		})
	}
}
