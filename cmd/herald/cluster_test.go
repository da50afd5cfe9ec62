package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// clusterBrokers are the shared brokers every cluster test runs on, each
// giving a --broker URL on a log of the test's own.
var clusterBrokers = []struct {
	name string
	url  func(testing.TB) string
}{
	{"redis", redistest.URL},
	{"nats", natstest.BrokerURL},
}

// forEachBroker runs test once per shared broker.
func forEachBroker(t *testing.T, test func(t *testing.T, broker string)) {
	for _, b := range clusterBrokers {
		t.Run(b.name, func(t *testing.T) { test(t, b.url(t)) })
	}
}

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
	lines, stopLines := streamLines(ctx, t, url, lastID)
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
func TestCluster(t *testing.T) { forEachBroker(t, testCluster) }

func testCluster(t *testing.T, broker string) {
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
	port := freePort(t)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitListening(t, port, "redis-server")
		return cmd
	}
	srv := start()
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	node := startServe(t, "--addr", "127.0.0.1:0", "--broker", fmt.Sprintf("redis://127.0.0.1:%d/0", port))
	ready := func() int { status, _ := node.get(t, "/readyz"); return status }
	publish := func(n int) {
		t.Helper()
		if status, body := node.post(t, "/v1/publish", fmt.Sprintf(`{"topic":"restart.a","data":{"n":%d}}`, n)); status != http.StatusOK {
			t.Fatalf("publish %d: %d %s", n, status, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := node.url + "/v1/events?topic=restart.*"

	lines, stop := streamLines(ctx, t, url, "")
	defer stop()
	publish(0)
	id := nextLine(t, lines, "id: ")

	_ = srv.Process.Kill()
	_ = srv.Wait()
	wait.For(t, 20*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	srv = start()
	wait.For(t, 20*time.Second, "/readyz to recover", func() bool { return ready() == http.StatusOK })
	publish(1)
	brokerRecovered(t, node.url, true)
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
	lines, stop := streamLines(ctx, t, url, strings.TrimPrefix(id, "id: "))
	defer stop()
	if ev := nextLine(t, lines, "event: "); ev != "event: herald.reset" {
		t.Fatalf("resuming with an old cursor: %q, want a reset", ev)
	}
	if data := nextLine(t, lines, "data: "); !strings.Contains(data, `"epoch_changed"`) {
		t.Errorf("reset %s: want reason epoch_changed", data)
	}
	for n := 2; n <= 4; n++ {
		publish(n)
		if data := nextLine(t, lines, "data: "); !strings.Contains(data, fmt.Sprintf(`"n":%d`, n)) {
			t.Fatalf("after the restart: %s, want event %d", data, n)
		}
	}
}

// streamLines opens an SSE stream and sends its lines; the channel closes
// when the stream ends.
func streamLines(ctx context.Context, t *testing.T, url, lastID string) (<-chan string, func()) {
	t.Helper()
	return streamLinesVia(ctx, t, http.DefaultClient, url, lastID)
}

// streamLinesVia is streamLines over client.
func streamLinesVia(ctx context.Context, t *testing.T, client *http.Client, url, lastID string) (<-chan string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("stream %s: %v %v", url, resp, err)
	}
	out := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case out <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, func() { cancel(); <-done }
}

// nextLine returns the next line with the prefix, skipping others.
func nextLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the stream ended before a %q line", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q line", prefix)
		}
	}
}

// TestBenchAcrossNodes runs herald bench with its subscribers on one node
// and its publishers on another, on one log: every delivery crosses the
// broker, and none is lost, repeated or out of order.
func TestBenchAcrossNodes(t *testing.T) { forEachBroker(t, testBenchAcrossNodes) }

func testBenchAcrossNodes(t *testing.T, broker string) {
	a := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	b := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	rep, _, err := benchJSON(t, "--url", a.url, "--publish-url", b.url, "--transport", "mixed",
		"--subscribers", "20", "--topics", "2", "--rate", "200", "--duration", "1s")
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if rep.Published == 0 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("published %d; delivered %d of %d, lost %d, dup %d, ooo %d",
			rep.Published, rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder)
	}
}

// TestClusterSubscriberCounts checks that GET /v1/topics on one node
// counts the subscribers of every node sharing the log.
func TestClusterSubscriberCounts(t *testing.T) { forEachBroker(t, testClusterSubscriberCounts) }

func testClusterSubscriberCounts(t *testing.T, broker string) {
	a := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	b := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, stopA := streamLines(ctx, t, a.url+"/v1/events?topic=count.*", "")
	defer stopA()
	_, stopB := streamLines(ctx, t, b.url+"/v1/events?topic=count.*", "")
	subscribers := func(in *instance) int {
		status, body := in.get(t, "/v1/topics")
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
	s := &natsServer{t: t, bin: bin, dir: t.TempDir(), port: freePort(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) start() {
	s.cmd = exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	waitListening(s.t, s.port, "nats-server")
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
			node := startServe(t, "--addr", "127.0.0.1:0",
				"--broker", fmt.Sprintf("nats://127.0.0.1:%d?storage=%s", srv.port, storage))
			ready := func() int { status, _ := node.get(t, "/readyz"); return status }
			publish := func(n int) {
				t.Helper()
				// Right after NATS is back, the stream may still be on its way.
				wait.For(t, 20*time.Second, fmt.Sprintf("publish %d to succeed", n), func() bool {
					status, _ := node.post(t, "/v1/publish", fmt.Sprintf(`{"topic":"restart.a","data":{"n":%d}}`, n))
					return status == http.StatusOK
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			url := node.url + "/v1/events?topic=restart.*"
			lines, stop := streamLines(ctx, t, url, "")
			defer stop()
			publish(0)
			id := nextLine(t, lines, "id: ")
			nextLine(t, lines, "data: ")

			srv.stop()
			wait.For(t, 20*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
			srv.start()
			wait.For(t, 20*time.Second, "/readyz to recover", func() bool { return ready() == http.StatusOK })
			brokerRecovered(t, node.url, false)
			// Actions go through the restarted server too (with memory
			// storage, through a queue and records made anew).
			var accepted struct{ ID string }
			wait.For(t, 20*time.Second, "an action to be accepted", func() bool {
				status, body := node.post(t, "/v1/actions", `{"type":"echo","topic":"elsewhere","payload":7}`)
				return status == http.StatusAccepted && json.Unmarshal(body, &accepted) == nil
			})
			wait.For(t, 20*time.Second, "the action to succeed", func() bool {
				status, body := node.get(t, "/v1/actions/"+accepted.ID)
				var a struct{ Status string }
				return status == http.StatusOK && json.Unmarshal(body, &a) == nil && a.Status == "succeeded"
			})
			publish(1)
			if storage == "file" {
				ev := nextLine(t, lines, "event: ")
				data := nextLine(t, lines, "data: ")
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
		fams, _ := scrape(t, url+"/metrics")
		errs, _ := value(fams, "herald_broker_errors_total", "op=deliver")
		again, _ := value(fams, "herald_broker_reconnects_total")
		up, _ := value(fams, "herald_broker_up")
		return (errs >= 1 || !failedReads) && again >= 1 && up == 1
	})
}

// freePort returns a port on 127.0.0.1 that was free a moment ago, for a
// server that must keep its port across a restart.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening waits until something accepts connections on the port.
func waitListening(t *testing.T, port int, what string) {
	t.Helper()
	wait.For(t, 10*time.Second, what+" to listen", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// buildHerald builds the herald binary once per test binary, for tests that
// must kill a node outright.
var buildHerald = sync.OnceValues(func() (string, error) {
	builtHerald.Store(true)
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// builtHerald is set once buildHerald has run.
var builtHerald atomic.Bool

// process is a herald serve in a process of its own. Its log (warnings,
// unless args set --log-level) is kept in logs and shown if the test fails.
type process struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin, append([]string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn"}, args...)...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, logs: logs}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log of the node at %s:\n%s", p.url, logs)
		}
	})
	wait.For(t, 20*time.Second, "the node to be ready", func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *process) kill() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// TestActionsSurviveNodeDeath runs three node processes on one broker
// with an upstream backend, holds every worker busy, and kills one node
// outright: every accepted action still ends succeeded, read from the
// survivors, and the killed node's actions ran again elsewhere.
func TestActionsSurviveNodeDeath(t *testing.T) { forEachBroker(t, testActionsSurviveNodeDeath) }

func testActionsSurviveNodeDeath(t *testing.T, broker string) {
	var (
		mu       sync.Mutex
		calls    = map[string]int{}
		inFlight int
		gate     = make(chan struct{})
	)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var call struct{ ID string }
		if err := json.NewDecoder(r.Body).Decode(&call); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls[call.ID]++
		inFlight++
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		select {
		case <-gate:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"done":%q}`, call.ID)
		case <-r.Context().Done(): // the node died
		}
	}))
	defer backend.Close()
	const workers = 4
	var nodes []*process
	for range 3 {
		nodes = append(nodes, startProcess(t, "--broker", broker, "--action-upstream", "work="+backend.URL,
			"--action-workers", strconv.Itoa(workers), "--action-lease", "1s", "--action-timeout", "60s"))
	}
	post := func(p *process, body string) (int, []byte) {
		resp, err := http.Post(p.url+"/v1/actions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	const total = 30
	ids := make([]string, 0, total)
	for i := range total {
		status, body := post(nodes[i%2], fmt.Sprintf(`{"type":"work","topic":"jobs","payload":%d}`, i))
		var a struct{ ID string }
		if status != http.StatusAccepted || json.Unmarshal(body, &a) != nil {
			t.Fatalf("submit %d: %d %s", i, status, body)
		}
		ids = append(ids, a.ID)
	}
	// Every worker of every node is busy: the node killed now has actions
	// in flight.
	wait.For(t, 30*time.Second, "every worker to be busy", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inFlight == 3*workers
	})
	nodes[2].kill()
	close(gate)

	for _, id := range ids {
		wait.For(t, 60*time.Second, "action "+id+" to succeed on a survivor", func() bool {
			resp, err := http.Get(nodes[0].url + "/v1/actions/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var a struct{ Status string }
			return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&a) == nil && a.Status == "succeeded"
		})
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for _, id := range ids {
		if calls[id] == 0 {
			t.Errorf("action %s succeeded without reaching the backend", id)
		}
		if calls[id] > 1 {
			again++
		}
	}
	if again < workers {
		t.Errorf("%d actions ran twice; the killed node had %d in flight, which should have run again", again, workers)
	}
}
