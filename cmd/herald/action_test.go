package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

func actionCmd(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	status := exitStatus(runAction(ctx, args, &stdout, &stderr), &stderr)
	return cmdResult{status, stdout.String(), stderr.String()}
}

func TestActionCmdEcho(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	r := actionCmd(t, "--url", in.URL, "--type", "echo", "--topic", "act.echo", "--payload", `{"x": [1, 2]}`, "--wait")
	if r.status != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.status, r.stderr)
	}
	var a heraldtest.ActionStatus
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout %q: want one line of JSON (%v)", r.stdout, err)
	}
	if a.Status != "succeeded" || a.Type != "echo" || string(a.Result) != `{"x":[1,2]}` || !strings.HasPrefix(a.ID, "act_") {
		t.Errorf("status %+v: want succeeded with the payload as result", a)
	}
	if h := history(t, in, "act.echo"); len(h) != 1 || h[0].Type != "action.succeeded" {
		t.Errorf("history %+v, want the result event", h)
	}

	// Without --wait: the ID alone.
	r = actionCmd(t, "--url", in.URL, "--type", "echo", "--topic", "act.echo")
	id := strings.TrimSuffix(r.stdout, "\n")
	if r.status != 0 || !strings.HasPrefix(id, "act_") || strings.Contains(id, "\n") {
		t.Fatalf("%+v: want the action ID", r)
	}
	if a := in.Finished(t, id); a.Status != "succeeded" || string(a.Result) != "null" {
		t.Errorf("status %+v, want succeeded with a null result", a)
	}
}

func TestActionCmdFailed(t *testing.T) {
	release := make(chan struct{})
	up := heraldtest.NewBackend(t, func(w http.ResponseWriter, r *http.Request, c heraldtest.UpstreamCall) {
		switch string(c.Body["type"]) {
		case `"todo.fail"`:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error":{"code":"refused","message":"no"}}`)
		case `"todo.slow"`:
			select {
			case <-release:
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, `{"ok":true}`)
		}
	})
	in := startServe(t, "--addr", "127.0.0.1:0", "--action-upstream", "todo.="+up.URL, "--action-max-attempts", "1")
	t.Cleanup(func() { close(release) }) // before the server's cleanup: its shutdown waits for the action

	r := actionCmd(t, "--url", in.URL, "--type", "todo.fail", "--topic", "act.todo", "--wait")
	var a heraldtest.ActionStatus
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	if r.status != 1 || a.Status != "failed" || a.Error == nil || a.Error.Code != "refused" ||
		r.stderr != "herald: action failed: refused: no\n" {
		t.Errorf("exit %d, status %+v, stderr %q: want exit 1 with the upstream's error", r.status, a, r.stderr)
	}

	r = actionCmd(t, "--url", in.URL, "--type", "todo.ok", "--topic", "act.todo", "--wait", "--payload", "1")
	if r.status != 0 || !strings.Contains(r.stdout, `"result":{"ok":true}`) {
		t.Errorf("%+v: want exit 0 with the upstream's result", r)
	}

	start := time.Now()
	r = actionCmd(t, "--url", in.URL, "--type", "todo.slow", "--topic", "act.todo", "--wait", "--timeout", "300ms")
	if r.status != 1 || r.stdout != "" || !strings.Contains(r.stderr, "timed out after 300ms waiting for action act_") {
		t.Errorf("%+v: want exit 1 with a timeout message", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("--timeout 300ms took %v", d)
	}
}

func TestActionCmdErrors(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	r := actionCmd(t, "--url", in.URL, "--type", "nope", "--topic", "act.x", "--wait")
	if r.status != 1 || r.stdout != "" || !strings.Contains(r.stderr, "unknown_action: ") || !strings.Contains(r.stderr, "HTTP 422") {
		t.Errorf("%+v: want exit 1 with unknown_action", r)
	}
	r = actionCmd(t, "--url", in.URL, "--type", "echo", "--topic", "bad topic")
	if r.status != 1 || !strings.Contains(r.stderr, "invalid_topic") {
		t.Errorf("%+v: want exit 1 with invalid_topic", r)
	}
	r = actionCmd(t, "-h")
	if r.status != 0 || !strings.Contains(r.stdout, "Usage: herald action") || !strings.Contains(r.stdout, "-idempotency-key KEY") {
		t.Errorf("%+v: want usage on stdout", r)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no type", []string{"--topic", "a"}, "--type is required"},
		{"no topic", []string{"--type", "echo"}, "--topic is required"},
		{"bad payload", []string{"--type", "echo", "--topic", "a", "--payload", "{"}, "--payload is not valid JSON"},
		{"bad timeout", []string{"--type", "echo", "--topic", "a", "--timeout", "soon"}, "invalid value"},
		{"zero timeout", []string{"--type", "echo", "--topic", "a", "--timeout", "0s"}, "--timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := actionCmd(t, append([]string{"--url", in.URL}, tc.args...)...)
			if r.status != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("%+v: want exit 2 mentioning %q", r, tc.stderr)
			}
		})
	}
}

func TestActionCmdIdempotency(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	args := []string{"--url", in.URL, "--type", "echo", "--topic", "act.idem", "--payload", `{"a":1}`, "--idempotency-key", "k-1"}
	first := actionCmd(t, args...)
	second := actionCmd(t, args...)
	if first.status != 0 || second.status != 0 || first.stdout == "" || first.stdout != second.stdout {
		t.Fatalf("first %+v, second %+v: want the same ID twice", first, second)
	}
	id := strings.TrimSuffix(first.stdout, "\n")
	in.Finished(t, id)
	waited := actionCmd(t, append(args, "--wait")...)
	var a heraldtest.ActionStatus
	if err := json.Unmarshal([]byte(waited.stdout), &a); err != nil || waited.status != 0 || a.ID != id || a.Status != "succeeded" {
		t.Errorf("%+v: want the first action's final status", waited)
	}
	if h := history(t, in, "act.idem"); len(h) != 1 {
		t.Errorf("history has %d result events, want 1: the action ran once", len(h))
	}
	r := actionCmd(t, "--url", in.URL, "--type", "echo", "--topic", "act.idem", "--payload", `{"a":2}`, "--idempotency-key", "k-1")
	if r.status != 1 || !strings.Contains(r.stderr, "idempotency_mismatch") {
		t.Errorf("%+v: want exit 1 with idempotency_mismatch", r)
	}
}
