package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/redistest"
)

// clusterEvent is one event read from a stream.
type clusterEvent struct {
	ID   string
	Data struct {
		ID   string
		Data struct{ Node, N int }
	}
}

// readSSE reads events from a stream until ctx ends or the stream does,
// sending each on out.
func readClusterStream(ctx context.Context, t *testing.T, url, lastID string, out chan<- clusterEvent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("stream %s: %v %v", url, resp, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev clusterEvent
			if json.Unmarshal([]byte(data), &ev.Data) != nil {
				continue
			}
			ev.ID = ev.Data.ID
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// TestClusterOnRedis runs three nodes on one Redis log: a subscriber on A
// gets everything B and C publish concurrently, once and in one order; it
// then leaves A and resumes on C from its last cursor without loss.
func TestClusterOnRedis(t *testing.T) {
	broker := redistest.URL(t)
	var nodes []*instance
	for range 3 {
		nodes = append(nodes, startServe(t, "--addr", "127.0.0.1:0", "--broker", broker))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	events := make(chan clusterEvent, 1000)
	stopA := readClusterStream(ctx, t, a.url+"/v1/events?topic=cluster.*", "", events)
	const each = 100
	var wg sync.WaitGroup
	for i, node := range []*instance{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				status, body := node.post(t, "/v1/publish", fmt.Sprintf(`{"topic":"cluster.n%d","data":{"node":%d,"n":%d}}`, i, i, n))
				if status != http.StatusOK {
					t.Errorf("publish on node %d: %d %s", i, status, body)
					return
				}
			}
		}()
	}
	wg.Wait()

	var got []clusterEvent
	next := map[int]int{} // per publishing node, the next n expected
	for len(got) < 2*each {
		select {
		case ev := <-events:
			got = append(got, ev)
			if ev.Data.Data.N != next[ev.Data.Data.Node] {
				t.Fatalf("node %d's events out of order: got n=%d, want %d", ev.Data.Data.Node, ev.Data.Data.N, next[ev.Data.Data.Node])
			}
			next[ev.Data.Data.Node]++
		case <-ctx.Done():
			t.Fatalf("node A got %d of %d events", len(got), 2*each)
		}
	}
	// One total order: cursors increase by one.
	for i := 1; i < len(got); i++ {
		if seqOf(t, got[i].ID) != seqOf(t, got[i-1].ID)+1 {
			t.Fatalf("cursors %s then %s: not consecutive", got[i-1].ID, got[i].ID)
		}
	}
	stopA()

	// Publish while the subscriber is away, then resume on node C.
	for n := range 20 {
		if status, body := b.post(t, "/v1/publish", fmt.Sprintf(`{"topic":"cluster.late","data":{"node":9,"n":%d}}`, n)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	resumed := make(chan clusterEvent, 100)
	stopC := readClusterStream(ctx, t, c.url+"/v1/events?topic=cluster.*", got[len(got)-1].ID, resumed)
	defer stopC()
	for n := range 20 {
		select {
		case ev := <-resumed:
			if ev.Data.Data.Node != 9 || ev.Data.Data.N != n {
				t.Fatalf("resumed on C: got %+v, want late event %d", ev.Data.Data, n)
			}
		case <-ctx.Done():
			t.Fatalf("resumed on C: got %d of 20 events", n)
		}
	}
}

func seqOf(t *testing.T, cursor string) int {
	t.Helper()
	i := strings.LastIndexByte(cursor, '-')
	var n int
	if _, err := fmt.Sscan(cursor[i+1:], &n); err != nil {
		t.Fatalf("cursor %q: %v", cursor, err)
	}
	return n
}
