package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestShutdownUnderLoad sends a node SIGTERM while publishers and action
// submitters keep it busy, and checks that nothing it accepted is lost:
//
//   - memory: a single node. Every action it answered 202 ends succeeded
//     or failed before the process exits, and its result event is
//     published: the node's last log line ("stopped") counts as many
//     accepted actions as the clients were answered 202, as many finished,
//     and as many events published as publishes answered 200 plus one
//     result per action.
//   - redis: two nodes on one Redis. After node A has exited, node B's
//     log holds every event A answered 200 (same cursor, same data), and
//     every action A answered 202 reaches a final status on B (failed only
//     with a reason), with its result event in the log.
//
// The actions run on a backend that takes a while, so that at the signal
// some are running and some wait in the queue. One publish is held open
// in the node across the signal (see drainLoad.signal): it must be
// answered 200, and its event must be in the log like the others.
//
// Short: 2 s of load before the signal. Full (HERALD_SOAK=1): 10 s, with
// more clients.
func TestShutdownUnderLoad(t *testing.T) {
	t.Run("memory", testShutdownMemory)
	t.Run("redis", testShutdownRedis)
}

func testShutdownMemory(t *testing.T) {
	backend := slowBackend(t)
	p := startProcess(t, "--log-level", "info", "--action-upstream", "work="+backend,
		"--action-workers", "4", "--shutdown-timeout", "20s")
	l := newDrainLoad(p.URL)
	l.start(t)
	if code := l.signal(t, p); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	l.wait()
	published, actions := l.results(t)
	logs := p.Logs.String()
	for _, bad := range []string{"failed to publish", "did not finish in time", "level=ERROR"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the log says %q", bad)
		}
	}
	m := regexp.MustCompile(`msg=stopped events_published=(\d+) publish_errors=(\d+) actions_accepted=(\d+) actions_succeeded=(\d+) actions_failed=(\d+)`).
		FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no stopped line with the node's counts in the log")
	}
	n := make([]int, len(m)-1)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	events, pubErrs, accepted, succeeded, failed := n[0], n[1], n[2], n[3], n[4]
	t.Logf("clients: %d publishes answered 200, %d actions answered 202; node: %d events published, %d actions accepted, %d succeeded, %d failed",
		len(published), len(actions), events, accepted, succeeded, failed)
	if accepted != len(actions) || succeeded+failed != accepted {
		t.Errorf("the node accepted %d actions and finished %d; its clients were answered 202 for %d", accepted, succeeded+failed, len(actions))
	}
	if pubErrs != 0 || events != len(published)+accepted {
		t.Errorf("the node published %d events (%d failed), want the %d publishes answered 200 and one result for each of %d actions",
			events, pubErrs, len(published), accepted)
	}
}

func testShutdownRedis(t *testing.T) {
	broker := redistest.URL(t)
	backend := slowBackend(t)
	args := []string{"--broker", broker, "--action-upstream", "work=" + backend,
		"--action-workers", "4", "--history-size", "1000000", "--shutdown-timeout", "20s"}
	a, b := startProcess(t, args...), startProcess(t, args...)
	l := newDrainLoad(a.URL)
	l.start(t)
	if code := l.signal(t, a); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	l.wait()
	published, actions := l.results(t)
	t.Logf("node A answered 200 to %d publishes and 202 to %d actions before it exited", len(published), len(actions))
	if len(published) == 0 || len(actions) == 0 {
		t.Fatal("nothing was accepted")
	}

	// Every publish A acknowledged is in the log, read from B.
	topics := map[string]bool{}
	for _, ev := range published {
		topics[ev.topic] = true
	}
	logged := map[string]string{}
	for topic := range topics {
		for id, data := range readTopic(t, b.URL, topic, published[0].id) {
			logged[id] = data
		}
	}
	for _, ev := range published {
		if got, ok := logged[ev.id]; !ok || got != ev.data {
			t.Errorf("publish %s of %s on %s: the log has %q (present %v)", ev.id, ev.data, ev.topic, got, ok)
		}
	}

	// Every action A accepted ends on B, and its result is published.
	unfinished := append([]string(nil), actions...)
	final := map[string]int{} // by status, and failures by code
	wait.For(t, 2*time.Minute, "every accepted action to finish", func() bool {
		still := unfinished[:0]
		for _, id := range unfinished {
			a := actionOn(t, b.URL, id)
			switch {
			case a.Status == "succeeded":
				final[a.Status]++
			case a.Status == "failed":
				if a.Error == nil || a.Error.Code == "" {
					t.Fatalf("action %s failed without a reason: %+v", id, a)
				}
				final[a.Status+" ("+a.Error.Code+")"]++
			default:
				still = append(still, id)
			}
		}
		unfinished = still
		return len(unfinished) == 0
	})
	t.Logf("on node B, the actions A accepted ended: %v", final)
	results := map[string]bool{}
	for _, data := range readTopic(t, b.URL, drainResults, published[0].id) {
		var r struct {
			ActionID string `json:"action_id"`
		}
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.Fatalf("result event data %s: %v", data, err)
		}
		results[r.ActionID] = true
	}
	for _, id := range actions {
		if !results[id] {
			t.Errorf("action %s has no result event in the log", id)
		}
	}
}

// drainResults is the topic the load's actions publish their results to.
const drainResults = "drain.results"

// slowBackend is an action backend whose every call takes 5 ms of work,
// so that four workers a node (800 actions/s) fall behind the submitters
// (1,500/s): at the signal, actions are running and queued.
func slowBackend(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case <-time.After(5 * time.Millisecond): // the work
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true,"bytes":` + strconv.Itoa(len(body)) + `}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// drainEvent is one publish the node answered 200.
type drainEvent struct {
	id, topic, data string
}

// drainLoad keeps a node busy with publishes and actions (see client1) and
// notes what the node accepted. A client stops at its first failed request
// once the node has been told to stop; before that, a failure fails the
// test.
type drainLoad struct {
	url        string
	publishers int
	submitters int
	warmup     int // accepted requests per client before the signal: 2 s (10 s at full size) of submissions
	client     *http.Client
	stopping   atomic.Bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu        sync.Mutex
	published []drainEvent
	actions   []string
	perClient []int // accepted requests of each client so far
	late      int   // accepted requests answered after the signal
	signalled bool
}

// signal sends the node SIGTERM while a request is known to be in flight
// in it, and returns the node's exit code once it has exited.
//
// Which of the load's requests are in flight at the signal is up to the
// scheduler: a connection whose next request the node has not begun to
// read is idle to http.Server.Shutdown, which closes it, and on a busy
// machine every connection can be between requests at that moment. So
// signal holds a publish of its own open: the node has read its headers
// and waits for its body ("100 Continue" says so) when the signal is sent,
// and the body follows only once the node refuses new connections, that
// is, once its shutdown has begun. That publish must be answered 200.
// Answers to the load after the signal are counted too, for the log.
func (l *drainLoad) signal(t *testing.T, p *process) int {
	t.Helper()
	held := l.hold(t)
	l.mu.Lock()
	l.signalled = true
	l.mu.Unlock()
	p.sigterm(t)
	addr := strings.TrimPrefix(p.URL, "http://")
	wait.For(t, 30*time.Second, "the node to refuse new connections after SIGTERM", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if err := held.release(); err != nil {
		t.Errorf("the publish in flight at the signal: %v", err)
	}
	return p.exit(t, 30*time.Second)
}

// heldPublish is a publish the node has begun to serve and whose body it
// waits for.
type heldPublish struct {
	body *io.PipeWriter
	done chan error // the outcome, once answered
}

// heldTopic is the topic of the held publish.
const heldTopic = "drain.held"

// hold starts a publish on a connection of its own and returns once the
// node is reading its body: the request's handler is running, and the node
// counts the connection as active until the publish is answered.
func (l *drainLoad) hold(t *testing.T) *heldPublish {
	t.Helper()
	pr, pw := io.Pipe()
	h := &heldPublish{body: pw, done: make(chan error, 1)}
	t.Cleanup(func() { pw.Close() })
	reading := make(chan struct{})
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { close(reading) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url+"/v1/publish", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	tr := &http.Transport{ExpectContinueTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: tr}
	go func() {
		var out struct{ ID string }
		err := l.do(client, req, http.StatusOK, &out)
		if err == nil {
			l.mu.Lock()
			l.published = append(l.published, drainEvent{id: out.ID, topic: heldTopic, data: heldData})
			l.mu.Unlock()
		}
		h.done <- err
	}()
	select {
	case <-reading:
	case err := <-h.done:
		t.Fatalf("the held publish ended before the node read its body: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the node did not start reading the held publish's body within a minute")
	}
	return h
}

// heldData is the data of the held publish.
const heldData = `{"held":true}`

// release sends the rest of the held publish and returns its outcome.
func (h *heldPublish) release() error {
	if _, err := io.WriteString(h.body, fmt.Sprintf(`{"topic":%q,"data":%s}`, heldTopic, heldData)); err != nil {
		return fmt.Errorf("failed to send the body: %w", err)
	}
	h.body.Close()
	return <-h.done
}

func newDrainLoad(url string) *drainLoad {
	return &drainLoad{
		url: url, publishers: pick(8, 16), submitters: 3, warmup: pick(1000, 5000),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
}

// start starts the clients and returns once each has had warmup requests
// accepted: the node is busy. From then on a failed request ends a client.
func (l *drainLoad) start(t *testing.T) {
	t.Helper()
	n := l.publishers + l.submitters
	l.perClient = make([]int, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l.cancel = cancel
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client1(ctx, t, i)
		}()
	}
	t.Cleanup(func() { l.stopping.Store(true); l.wait() })
	wait.For(t, time.Minute, "every client to be busy", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range l.perClient {
			if c < l.warmup {
				return false
			}
		}
		return true
	})
	l.stopping.Store(true)
}

// client1 runs client i: a publisher, which sends its next request as
// soon as the last is answered, so that some are always in flight, or past
// l.publishers an action submitter, which sends at most 500 a second, more
// than the backend takes (see slowBackend) but not so many that the backlog
// takes long to clear.
func (l *drainLoad) client1(ctx context.Context, t *testing.T, i int) {
	var pace <-chan time.Time
	if i >= l.publishers {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		pace = tick.C
	}
	for n := 0; ctx.Err() == nil; n++ {
		if pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				return
			}
		}
		var err error
		if i < l.publishers {
			err = l.publish(ctx, fmt.Sprintf("drain.p%d", i), fmt.Sprintf(`{"client":%d,"n":%d}`, i, n))
		} else {
			err = l.submit(ctx, fmt.Sprintf(`{"type":"work","topic":%q,"payload":{"client":%d,"n":%d}}`, drainResults, i, n))
		}
		if err != nil {
			if !l.stopping.Load() {
				t.Errorf("client %d before the signal: %v", i, err)
			}
			return
		}
		l.mu.Lock()
		l.perClient[i]++
		if l.signalled {
			l.late++
		}
		l.mu.Unlock()
	}
}

// publish posts one event and notes it if the node answers 200.
func (l *drainLoad) publish(ctx context.Context, topic, data string) error {
	var out struct{ ID string }
	if err := l.post(ctx, "/v1/publish", fmt.Sprintf(`{"topic":%q,"data":%s}`, topic, data), http.StatusOK, &out); err != nil {
		return err
	}
	l.mu.Lock()
	l.published = append(l.published, drainEvent{id: out.ID, topic: topic, data: data})
	l.mu.Unlock()
	return nil
}

// submit posts one action and notes it if the node answers 202.
func (l *drainLoad) submit(ctx context.Context, body string) error {
	var out struct{ ID string }
	if err := l.post(ctx, "/v1/actions", body, http.StatusAccepted, &out); err != nil {
		return err
	}
	l.mu.Lock()
	l.actions = append(l.actions, out.ID)
	l.mu.Unlock()
	return nil
}

func (l *drainLoad) post(ctx context.Context, path, body string, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return l.do(l.client, req, want, out)
}

// do sends req through client and decodes the answer, which must have the
// status want, into out.
func (l *drainLoad) do(client *http.Client, req *http.Request, want int, out any) error {
	path := req.URL.Path
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("POST %s: answer %s: %w", path, b, err)
	}
	return nil
}

// wait waits for every client to end, and frees their connections.
func (l *drainLoad) wait() {
	l.wg.Wait()
	l.cancel()
	l.client.CloseIdleConnections()
}

// results returns what the node accepted, the held publish among it. Call
// after wait.
func (l *drainLoad) results(t *testing.T) ([]drainEvent, []string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d publishes and %d actions accepted, %d of the load's answered after the signal", len(l.published), len(l.actions), l.late)
	return l.published, l.actions
}

// readTopic reads a topic's whole retained history from a node, oldest
// first, as cursor → data. It pages from the position before the log's
// first event: sequence 0 of the epoch any cursor of the log (like) names.
func readTopic(t *testing.T, url, topic, like string) map[string]string {
	t.Helper()
	after := like[:strings.LastIndexByte(like, '-')] + "-0"
	out := map[string]string{}
	for {
		resp, err := http.Get(url + "/v1/topics/" + topic + "/history?limit=1000&after=" + after)
		if err != nil {
			t.Fatalf("history of %s: %v", topic, err)
		}
		var page struct {
			Events []struct {
				ID   string          `json:"id"`
				Data json.RawMessage `json:"data"`
			} `json:"events"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("history of %s after %s: %d %v", topic, after, resp.StatusCode, err)
		}
		if len(page.Events) == 0 {
			return out
		}
		for _, e := range page.Events {
			out[e.ID] = string(e.Data)
		}
		after = page.Events[len(page.Events)-1].ID
	}
}

// actionOn reads an action's status from a node.
func actionOn(t *testing.T, url, id string) heraldtest.ActionStatus {
	t.Helper()
	resp, err := http.Get(url + "/v1/actions/" + id)
	if err != nil {
		t.Fatalf("GET action %s: %v", id, err)
	}
	defer resp.Body.Close()
	var a heraldtest.ActionStatus
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET action %s: %d %v", id, resp.StatusCode, err)
	}
	return a
}
