package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// clusterEvent is one event read from a stream.
type clusterEvent struct {
	ID   string
	Data struct {
		ID   string
		Data struct{ Node, N int }
	}
}

// readClusterStream reads events from a stream until ctx ends or the
// stream does, sending each on out.
func readClusterStream(ctx context.Context, t *testing.T, url, lastID string, out chan<- clusterEvent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	lines, stopLines := heraldtest.StreamLines(ctx, t, url, lastID)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for l := range lines {
			data, ok := strings.CutPrefix(l, "data: ")
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
	return func() { cancel(); stopLines(); <-done }
}

// TestCluster runs three nodes on one shared log: a subscriber on A gets
// everything B and C publish concurrently, once and in one order; it then
// leaves A and resumes on C from its last cursor without loss.
func TestCluster(t *testing.T) { heraldtest.ForEachBroker(t, testCluster) }

func testCluster(t *testing.T, broker string) {
	var nodes []*heraldtest.Node
	for range 3 {
		nodes = append(nodes, start(t, server.Config{Broker: broker}))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	events := make(chan clusterEvent, 1000)
	stopA := readClusterStream(ctx, t, a.URL+"/v1/events?topic=cluster.*", "", events)
	const each = 100
	var wg sync.WaitGroup
	for i, node := range []*heraldtest.Node{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				status, body := node.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"cluster.n%d","data":{"node":%d,"n":%d}}`, i, i, n))
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
	// One total order: cursors increase by one (single events leave no
	// unused positions, even on NATS).
	for i := 1; i < len(got); i++ {
		if seqOf(t, got[i].ID) != seqOf(t, got[i-1].ID)+1 {
			t.Fatalf("cursors %s then %s: not consecutive", got[i-1].ID, got[i].ID)
		}
	}
	stopA()

	// Publish while the subscriber is away, then resume on node C.
	for n := range 20 {
		if status, body := b.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"cluster.late","data":{"node":9,"n":%d}}`, n)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	resumed := make(chan clusterEvent, 100)
	stopC := readClusterStream(ctx, t, c.URL+"/v1/events?topic=cluster.*", got[len(got)-1].ID, resumed)
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

// TestClusterRewind subscribes with rewind=5 on another node than the
// one that published: the newest five events of the shared log come
// first, then a live one, on every broker.
func TestClusterRewind(t *testing.T) { heraldtest.ForEachBroker(t, testClusterRewind) }

func testClusterRewind(t *testing.T, broker string) {
	a, b := start(t, server.Config{Broker: broker}), start(t, server.Config{Broker: broker})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(n int) {
		t.Helper()
		if status, body := a.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"rewind.n","data":{"node":1,"n":%d}}`, n)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		// An event of another topic between each: it must not count.
		if status, body := a.Post(t, "/v1/publish", `{"topic":"other","data":{}}`); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	for n := range 12 {
		publish(n)
	}
	events := make(chan clusterEvent, 100)
	stop := readClusterStream(ctx, t, b.URL+"/v1/events?topic=rewind.*&rewind=5", "", events)
	defer stop()
	for want := 7; want <= 12; want++ {
		if want == 12 {
			// The five retained ones have come: this one is live.
			publish(12)
		}
		select {
		case ev := <-events:
			if ev.Data.Data.N != want {
				t.Fatalf("rewind=5 on the other node: got n=%d, want %d", ev.Data.Data.N, want)
			}
		case <-ctx.Done():
			t.Fatalf("rewind=5 on the other node: no event n=%d", want)
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

// TestRedisRestart runs a node on a Redis of its own, kills Redis under
// it and starts it again, empty: /readyz goes 503 and back to 200. With the
// first event of the new log the node ends its streams; a client that comes
// back with its cursor gets a reset (epoch_changed) and then what is
// published.
func TestRedisRestart(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server binary")
	}
	port := heraldtest.FreePort(t)
	startRedis := func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		heraldtest.WaitListening(t, port, "redis-server")
		return cmd
	}
	srv := startRedis()
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	node := start(t, server.Config{Broker: fmt.Sprintf("redis://127.0.0.1:%d/0", port)})
	ready := func() int { status, _ := node.Get(t, "/readyz"); return status }
	publish := func(n int) {
		t.Helper()
		if status, body := node.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"restart.a","data":{"n":%d}}`, n)); status != http.StatusOK {
			t.Fatalf("publish %d: %d %s", n, status, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := node.URL + "/v1/events?topic=restart.*"

	lines, stop := heraldtest.StreamLines(ctx, t, url, "")
	defer stop()
	publish(0)
	id := heraldtest.NextLine(t, lines, "id: ")

	_ = srv.Process.Kill()
	_ = srv.Wait()
	wait.For(t, 20*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	srv = startRedis()
	wait.For(t, 20*time.Second, "/readyz to recover", func() bool { return ready() == http.StatusOK })
	publish(1)
	brokerRecovered(t, node.URL, true)
	expectNewLog(ctx, t, lines, url, id, publish)
}

// expectNewLog checks what follows a lost log: the node ends the open
// stream (lines) at the new log's first event; the client that comes back
// with its cursor (the stream's "id: " line id) gets a reset, reason
// epoch_changed, and then the events publish(2…4) sends.
func expectNewLog(ctx context.Context, t *testing.T, lines <-chan string, url, id string, publish func(int)) {
	t.Helper()
	for range lines {
	}
	lines, stop := heraldtest.StreamLines(ctx, t, url, strings.TrimPrefix(id, "id: "))
	defer stop()
	if ev := heraldtest.NextLine(t, lines, "event: "); ev != "event: herald.reset" {
		t.Fatalf("resuming with an old cursor: %q, want a reset", ev)
	}
	if data := heraldtest.NextLine(t, lines, "data: "); !strings.Contains(data, `"epoch_changed"`) {
		t.Errorf("reset %s: want reason epoch_changed", data)
	}
	for n := 2; n <= 4; n++ {
		publish(n)
		if data := heraldtest.NextLine(t, lines, "data: "); !strings.Contains(data, fmt.Sprintf(`"n":%d`, n)) {
			t.Fatalf("after the restart: %s, want event %d", data, n)
		}
	}
}

// TestClusterSubscriberCounts checks that GET /v1/topics on one node
// counts the subscribers of every node sharing the log.
func TestClusterSubscriberCounts(t *testing.T) {
	heraldtest.ForEachBroker(t, testClusterSubscriberCounts)
}

func testClusterSubscriberCounts(t *testing.T, broker string) {
	a := start(t, server.Config{Broker: broker})
	b := start(t, server.Config{Broker: broker})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, stopA := heraldtest.StreamLines(ctx, t, a.URL+"/v1/events?topic=count.*", "")
	defer stopA()
	_, stopB := heraldtest.StreamLines(ctx, t, b.URL+"/v1/events?topic=count.*", "")
	subscribers := func(in *heraldtest.Node) int {
		status, body := in.Get(t, "/v1/topics")
		if status != http.StatusOK {
			t.Fatalf("topics: %d %s", status, body)
		}
		var out struct {
			Topics []struct {
				Topic       string
				Subscribers int
			}
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		for _, r := range out.Topics {
			if r.Topic == "count.*" {
				return r.Subscribers
			}
		}
		return 0
	}
	wait.For(t, 20*time.Second, "node A to count both nodes' subscribers", func() bool { return subscribers(a) == 2 })
	stopB()
	wait.For(t, 20*time.Second, "node A to see node B's subscriber go", func() bool { return subscribers(a) == 1 })
}

// natsServer runs a nats-server of the test's own, with JetStream stored in
// dir, on a fixed port so that it can be restarted in place.
type natsServer struct {
	t        *testing.T
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

func newNATSServer(t *testing.T) *natsServer {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("no nats-server binary")
	}
	s := &natsServer{t: t, bin: bin, dir: t.TempDir(), port: heraldtest.FreePort(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) start() {
	s.cmd = exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	heraldtest.WaitListening(s.t, s.port, "nats-server")
}

func (s *natsServer) stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// TestNATSRestart kills the NATS server under a node and starts it again:
// /readyz goes 503 and back to 200. With file storage the log survives, and
// a subscriber that stayed connected goes on receiving, without a reset.
// With memory storage the log is lost: the node ends its streams at the
// new log's first event, and a client that comes back with its cursor gets
// a reset (epoch_changed) and then what is published.
func TestNATSRestart(t *testing.T) {
	for _, storage := range []string{"file", "memory"} {
		t.Run(storage, func(t *testing.T) {
			srv := newNATSServer(t)
			node := start(t, server.Config{Broker: fmt.Sprintf("nats://127.0.0.1:%d?storage=%s", srv.port, storage)})
			ready := func() int { status, _ := node.Get(t, "/readyz"); return status }
			publish := func(n int) {
				t.Helper()
				// Right after NATS is back, the stream may still be on its way.
				wait.For(t, 20*time.Second, fmt.Sprintf("publish %d to succeed", n), func() bool {
					status, _ := node.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"restart.a","data":{"n":%d}}`, n))
					return status == http.StatusOK
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			url := node.URL + "/v1/events?topic=restart.*"
			lines, stop := heraldtest.StreamLines(ctx, t, url, "")
			defer stop()
			publish(0)
			id := heraldtest.NextLine(t, lines, "id: ")
			heraldtest.NextLine(t, lines, "data: ")

			srv.stop()
			wait.For(t, 20*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
			srv.start()
			wait.For(t, 20*time.Second, "/readyz to recover", func() bool { return ready() == http.StatusOK })
			brokerRecovered(t, node.URL, false)
			// Actions go through the restarted server too (with memory
			// storage, through a queue and records made anew).
			var accepted struct{ ID string }
			wait.For(t, 20*time.Second, "an action to be accepted", func() bool {
				status, body := node.Post(t, "/v1/actions", `{"type":"echo","topic":"elsewhere","payload":7}`)
				return status == http.StatusAccepted && json.Unmarshal(body, &accepted) == nil
			})
			wait.For(t, 20*time.Second, "the action to succeed", func() bool {
				status, body := node.Get(t, "/v1/actions/"+accepted.ID)
				var a struct{ Status string }
				return status == http.StatusOK && json.Unmarshal(body, &a) == nil && a.Status == "succeeded"
			})
			publish(1)
			if storage == "file" {
				ev := heraldtest.NextLine(t, lines, "event: ")
				data := heraldtest.NextLine(t, lines, "data: ")
				if ev != "event: message" || !strings.Contains(data, `"n":1`) {
					t.Fatalf("after the restart the open stream got %s %s, want event 1", ev, data)
				}
				return
			}
			expectNewLog(ctx, t, lines, url, id, publish)
		})
	}
}

// brokerRecovered checks that /metrics tells of the broker's recovery and,
// when failedReads, of the failed reads of the log before it. (NATS's
// ordered consumer waits through a disconnection instead of failing.)
func brokerRecovered(t *testing.T, url string, failedReads bool) {
	t.Helper()
	wait.For(t, 20*time.Second, "the metrics to show the broker's recovery", func() bool {
		fams, _ := heraldtest.Scrape(t, url+"/metrics")
		errs, _ := heraldtest.Value(fams, "herald_broker_errors_total", "op=deliver")
		again, _ := heraldtest.Value(fams, "herald_broker_reconnects_total")
		up, _ := heraldtest.Value(fams, "herald_broker_up")
		return (errs >= 1 || !failedReads) && again >= 1 && up == 1
	})
}
