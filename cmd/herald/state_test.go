package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// TestStateCommand prints a keyed topic's state as a user reads it: the
// latest event of each key that is left, oldest first, one per line, and
// where it is exact on stderr; and refuses what it cannot ask.
func TestStateCommand(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	var last string
	for _, ev := range []string{
		`{"topic":"doc.7","type":"cursor","key":"alice","data":{"line":1}}`,
		`{"topic":"doc.7","type":"cursor","key":"bob","data":{"line":3}}`,
		`{"topic":"doc.7","type":"cursor","key":"carol","data":{"line":5}}`,
		`{"topic":"doc.7","type":"cursor","key":"alice","data":{"line":12}}`,
		`{"topic":"doc.7","type":"cursor","key":"bob","data":null}`,
	} {
		status, body := in.Post(t, "/v1/publish", ev)
		if status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		var r struct{ ID string }
		_ = json.Unmarshal(body, &r)
		last = r.ID
	}

	var stdout, stderr bytes.Buffer
	if status := exitStatus(runState(context.Background(), []string{"--url", in.URL, "doc.7"}, &stdout, &stderr), &stderr); status != 0 {
		t.Fatalf("exit status %d: %s", status, &stderr)
	}
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var e struct {
			Key  string
			Data struct{ Line int }
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		keys = append(keys, fmt.Sprintf("%s:%d", e.Key, e.Data.Line))
	}
	if got := strings.Join(keys, " "); got != "carol:5 alice:12" {
		t.Errorf("state printed %q, want carol:5 alice:12 (oldest first, bob removed)", got)
	}
	if want := fmt.Sprintf("state of doc.7 at %s: 2 keys", last); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", &stderr, want)
	}

	closed := fmt.Sprintf("http://127.0.0.1:%d", heraldtest.FreePort(t))
	runCommands(t, []commandCase{
		{name: "empty topic", args: []string{"state", "--url", in.URL, "nothing.here"}, status: 0, stderr: ": 0 keys"},
		{name: "no topic", args: []string{"state", "--url", in.URL}, status: 2, stderr: "state takes one TOPIC"},
		{name: "a pattern", args: []string{"state", "--url", in.URL, "doc.*"}, status: 2, stderr: "doc.*"},
		{name: "bad flag", args: []string{"state", "--frob", "doc.7"}, status: 2, stderr: "herald state -h"},
		{name: "nothing listening", args: []string{"state", "--url", closed, "doc.7"}, status: 1, stderr: "cannot connect"},
		{name: "-h", args: []string{"state", "-h"}, status: 0, stdout: "Usage: herald state"},
	})
}
