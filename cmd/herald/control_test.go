package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

func controlCmd(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	status := exitStatus(runControl(ctx, args[0] == "unsubscribe", args[1:], &stdout), &stderr)
	return cmdResult{status, stdout.String(), stderr.String()}
}

// mintToken runs "herald token" and returns the token it prints.
func mintToken(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if st := run(append([]string{"token"}, args...), &stdout, &stderr); st != 0 {
		t.Fatalf("herald token %v: exit %d, %s", args, st, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// TestDisconnectCommand: "herald disconnect --user" with the API key, and
// with an admin token from "herald token --admin", ends the user's SSE
// streams and prints how many; a user token is refused.
func TestDisconnectCommand(t *testing.T) {
	const secret = "a secret for HS256 of 32 bytes!!"
	in := startServe(t, "--addr", "127.0.0.1:0", "--auth", "jwt", "--jwt-secret", secret, "--api-key", "ops-key")
	user := mintToken(t, "--secret", secret, "--sub", "alice", "--subscribe", "orders.>")
	admin := mintToken(t, "--secret", secret, "--sub", "ops", "--admin")

	// stream opens an SSE stream as alice and returns a channel closed
	// when it ends.
	stream := func() <-chan struct{} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v1/events?topic=orders.*&access_token="+user, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/events: %v %v", resp, err)
		}
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
		}()
		return ended
	}
	waitEnded := func(ch <-chan struct{}, what string) {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not end", what)
		}
	}

	a, b := stream(), stream()
	t.Setenv("HERALD_API_KEY", "ops-key")
	r := controlCmd(t, "disconnect", "--url", in.URL, "--user", "alice")
	if r.status != 0 || r.stdout != "2\n" {
		t.Fatalf("herald disconnect --user alice: exit %d, stdout %q, stderr %q; want 2", r.status, r.stdout, r.stderr)
	}
	waitEnded(a, "alice's first stream")
	waitEnded(b, "alice's second stream")

	c := stream()
	t.Setenv("HERALD_API_KEY", "")
	r = controlCmd(t, "unsubscribe", "--url", in.URL, "--token", admin, "--user", "alice", "--topics", "orders.*, news")
	if r.status != 0 || r.stdout != "1\n" {
		t.Fatalf("herald unsubscribe with an admin token: exit %d, stdout %q, stderr %q; want 1", r.status, r.stdout, r.stderr)
	}
	r = controlCmd(t, "disconnect", "--url", in.URL, "--token", admin, "--user", "alice")
	if r.status != 0 || r.stdout != "1\n" {
		t.Fatalf("herald disconnect with an admin token: exit %d, stdout %q, stderr %q; want 1", r.status, r.stdout, r.stderr)
	}
	waitEnded(c, "alice's third stream")

	r = controlCmd(t, "disconnect", "--url", in.URL, "--token", user, "--user", "alice")
	if r.status != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Errorf("herald disconnect with a user token: exit %d, stderr %q; want 1 and forbidden", r.status, r.stderr)
	}
	for _, bad := range [][]string{
		{"disconnect", "--url", in.URL, "--api-key", "k"},
		{"disconnect", "--url", in.URL, "--api-key", "k", "--user", "a", "--client", "b"},
		{"disconnect", "--url", in.URL, "--user", "a"},
		{"unsubscribe", "--url", in.URL, "--api-key", "k", "--user", "a"},
		{"disconnect", "--url", in.URL, "--api-key", "k", "--token", "t", "--user", "a"},
	} {
		if r := controlCmd(t, bad...); r.status != 2 {
			t.Errorf("herald %v: exit %d, want 2 (usage)", bad, r.status)
		}
	}
}

// TestSubUnsubscribed: herald sub, on both transports, reports the control
// API's unsubscribe on stderr, prints no event of that pattern after it,
// and goes on with the others.
func TestSubUnsubscribed(t *testing.T) {
	const secret = "a secret for HS256 of 32 bytes!!"
	in := startServe(t, "--addr", "127.0.0.1:0", "--auth", "jwt", "--jwt-secret", secret, "--api-key", "ops-key")
	for _, tr := range []string{"ws", "sse"} {
		t.Run(tr, func(t *testing.T) {
			sub := "u-" + tr
			tok := mintToken(t, "--secret", secret, "--sub", sub, "--subscribe", ">")
			s := startSub(t, "--url", in.URL, "--transport", tr, "--token", tok, "--topic", "un.a", "--topic", "un.b")
			s.waitSubscribed(t, 1)
			r := controlCmd(t, "unsubscribe", "--url", in.URL, "--api-key", "ops-key", "--user", sub, "--topics", "un.a")
			if r.status != 0 || r.stdout != "1\n" {
				t.Fatalf("herald unsubscribe: exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
			}
			wait.For(t, 10*time.Second, "the report on stderr", func() bool {
				return strings.Contains(s.stderr.String(), "unsubscribed by the server from un.a\n")
			})
			pubTok := mintToken(t, "--secret", secret, "--sub", "backend", "--publish", ">")
			for _, topic := range []string{"un.a", "un.b"} {
				if r := pubCmd(t, "", "--url", in.URL, "--token", pubTok, "--topic", topic, "--data", "1"); r.status != 0 {
					t.Fatalf("publish %s: %+v", topic, r)
				}
			}
			lines := s.waitLines(t, 1)
			if len(lines) != 1 || !strings.Contains(lines[0], `"topic":"un.b"`) {
				t.Errorf("printed %q, want the un.b event alone", lines)
			}
			if strings.Contains(s.stderr.String(), "malformed") {
				t.Errorf("stderr: %s", s.stderr)
			}
		})
	}
}
