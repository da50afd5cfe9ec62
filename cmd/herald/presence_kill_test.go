package main

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/redistest"
)

// TestPresenceNodeKilled runs two node processes on one Redis, a member on
// one of them and a watcher with presence events on the other, and kills
// the member's node outright (SIGKILL: no leave, no clean-up): the
// surviving node makes the member leave within 30 s.
func TestPresenceNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a heartbeat to expire (about 20 s)")
	}
	broker := redistest.URL(t)
	doomed := startProcess(t, "--broker", broker)
	survivor := startProcess(t, "--broker", broker)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, _ := http.NewRequestWithContext(ctx, http.MethodGet, survivor.URL+"/v1/events?topic=room.k&presence_events=1", nil)
	wresp, err := http.DefaultClient.Do(watch)
	if err != nil || wresp.StatusCode != http.StatusOK {
		t.Fatalf("watcher: %v %v", wresp, err)
	}
	defer wresp.Body.Close()
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(wresp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data: ") {
				events <- l
			}
		}
	}()
	member, _ := http.NewRequestWithContext(ctx, http.MethodGet, doomed.URL+"/v1/events?topic=room.k&presence=1", nil)
	mresp, err := http.DefaultClient.Do(member)
	if err != nil || mresp.StatusCode != http.StatusOK {
		t.Fatalf("member: %v %v", mresp, err)
	}
	defer mresp.Body.Close()
	id := mresp.Header.Get("Herald-Client")
	next := func(within time.Duration) string {
		select {
		case l, ok := <-events:
			if !ok {
				t.Fatal("the watcher's stream ended")
			}
			return l
		case <-time.After(within):
			t.Fatalf("no event within %v", within)
		}
		return ""
	}
	if l := next(20 * time.Second); !strings.Contains(l, `"type":"herald.join"`) || !strings.Contains(l, id) {
		t.Fatalf("watcher got %s, want the join of %s", l, id)
	}
	killed := time.Now()
	doomed.kill()
	l := next(40 * time.Second)
	took := time.Since(killed)
	if !strings.Contains(l, `"type":"herald.leave"`) || !strings.Contains(l, id) {
		t.Fatalf("watcher got %s, want the leave of %s", l, id)
	}
	if took > 30*time.Second {
		t.Errorf("the leave came %v after the kill, want within 30 s", took)
	}
	t.Logf("the killed node's member left %v after SIGKILL", took.Round(100*time.Millisecond))
	status, body := func() (int, string) {
		resp, err := http.Get(survivor.URL + "/v1/topics/room.k/presence")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			b.WriteString(sc.Text())
		}
		return resp.StatusCode, b.String()
	}()
	if status != http.StatusOK || !strings.Contains(body, `"clients":0`) {
		t.Errorf("presence after the sweep: %d %s", status, body)
	}
}
