package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestPresenceCommands: "herald sub --presence" makes members (over ws
// with --info, over sse), "herald sub --presence-events" prints their joins
// and leaves, and "herald presence" lists the members and where the list is
// exact.
func TestPresenceCommands(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	watcher := startSub(t, "--url", in.URL, "--topic", "room.7", "--presence-events")
	watcher.waitSubscribed(t, 1)
	ws := startSub(t, "--url", in.URL, "--topic", "room.7", "--presence", "--info", `{"name": "ws"}`)
	sse := startSub(t, "--url", in.URL, "--transport", "sse", "--topic", "room.7", "--presence")
	ws.waitSubscribed(t, 1)
	sse.waitSubscribed(t, 1)
	lines := watcher.waitLines(t, 2)
	for _, l := range lines {
		if !strings.Contains(l, `"type":"herald.join"`) {
			t.Errorf("watcher printed %s, want joins", l)
		}
	}

	var stdout, stderr bytes.Buffer
	if status := exitStatus(runPresence(context.Background(), []string{"--url", in.URL, "room.7"}, &stdout, &stderr), &stderr); status != 0 {
		t.Fatalf("exit status %d: %s", status, &stderr)
	}
	members := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(members) != 2 || !strings.Contains(stdout.String(), `"info":{"name":"ws"}`) {
		t.Errorf("presence printed %q, want two members, one with the ws info", stdout.String())
	}
	for _, m := range members {
		var v struct{ Client string }
		if err := json.Unmarshal([]byte(m), &v); err != nil || v.Client == "" {
			t.Errorf("member line %q: %v", m, err)
		}
		if !strings.Contains(ws.stderr.String()+sse.stderr.String(), " as "+v.Client) {
			t.Errorf("member %s is neither subscriber's connection (%s / %s)", v.Client, ws.stderr, sse.stderr)
		}
	}
	if !strings.Contains(stderr.String(), "presence of room.7 at ") || !strings.Contains(stderr.String(), ": 2 clients, 0 users") {
		t.Errorf("stderr %q", &stderr)
	}
	if err := ws.stop(t); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the leave", func() bool {
		return strings.Contains(watcher.stdout.String(), `"type":"herald.leave"`)
	})

	closed := fmt.Sprintf("http://127.0.0.1:%d", heraldtest.FreePort(t))
	runCommands(t, []commandCase{
		{name: "empty topic", args: []string{"presence", "--url", in.URL, "nobody.here"}, status: 0, stderr: ": 0 clients, 0 users"},
		{name: "no topic", args: []string{"presence", "--url", in.URL}, status: 2, stderr: "presence takes one TOPIC"},
		{name: "a pattern", args: []string{"presence", "--url", in.URL, "room.*"}, status: 2, stderr: "room.*"},
		{name: "nothing listening", args: []string{"presence", "--url", closed, "room.7"}, status: 1, stderr: "cannot connect"},
		{name: "-h", args: []string{"presence", "-h"}, status: 0, stdout: "Usage: herald presence"},
		{name: "sub presence on a pattern", args: []string{"sub", "--url", in.URL, "--topic", "room.*", "--presence"}, status: 2, stderr: "exact topics"},
		{name: "sub info without presence", args: []string{"sub", "--url", in.URL, "--topic", "room.1", "--info", "{}"}, status: 2, stderr: "--presence"},
		{name: "sub bad info", args: []string{"sub", "--url", in.URL, "--topic", "room.1", "--presence", "--info", "[1]"}, status: 2, stderr: "invalid --info"},
	})
}
