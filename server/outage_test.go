package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// relayedBrokers are the shared brokers the outage tests put a relay in
// front of: the address the relay forwards to, and a broker URL to rewrite
// to the relay's.
func relayedBrokers() []struct {
	name, target string
	url          func(testing.TB) string
} {
	return []struct {
		name, target string
		url          func(testing.TB) string
	}{
		{"redis", redistest.Addr(), redistest.URL},
		{"nats", strings.TrimPrefix(natstest.URL(), "nats://"), natstest.BrokerURL},
	}
}

// outageBound is how long any request may take while the broker is cut
// off: a publish gives up on learning its outcome after 5 s.
const outageBound = 10 * time.Second

// TestBrokerOutage puts a relay between a node and its broker and cuts it
// (every connection closed, new ones refused) while publishers keep
// publishing, restores it, and cuts it once more for a moment. While cut,
// publishing (HTTP and WebSocket), history, topics and actions answer 503
// unavailable, and /readyz 503. Afterwards the log holds every publish
// answered with a cursor exactly once, under that cursor, and none
// answered 503; a publish whose outcome the node could not learn in time
// (503 saying so) is there at most once. A subscriber on the node receives
// the log as it is, through both cuts.
func TestBrokerOutage(t *testing.T) {
	for _, b := range relayedBrokers() {
		t.Run(b.name, func(t *testing.T) {
			broker := b.url(t)
			rl := relay.Start(t, b.target, relay.Options{})
			testBrokerOutage(t, rl, strings.Replace(broker, b.target, rl.Addr(), 1))
		})
	}
}

// publishOutcome is what one publish of the outage test was answered.
type publishOutcome struct {
	data      []string // the events' data, as stored
	ids       []string // 200: the cursors
	notStored bool     // 503 unavailable: not stored
	unknown   bool     // 503 unavailable, the outcome unknown
}

func testBrokerOutage(t *testing.T, rl *relay.Relay, broker string) {
	node := start(t, server.Config{Broker: broker})
	status, body := node.Post(t, "/v1/publish", `{"topic":"outage.a","data":"start"}`)
	if status != http.StatusOK {
		t.Fatalf("first publish: %d %s", status, body)
	}
	var first struct{ ID string }
	_ = json.Unmarshal(body, &first)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A subscriber on the node from the first event on, for the whole test.
	var (
		liveMu sync.Mutex
		live   []string // cursors, as delivered
	)
	lines, stopLines := heraldtest.StreamLines(ctx, t, node.URL+"/v1/events?topic=outage.a", first.ID)
	defer stopLines()
	go func() {
		for l := range lines {
			if id, ok := strings.CutPrefix(l, "id: "); ok {
				liveMu.Lock()
				live = append(live, id)
				liveMu.Unlock()
			}
		}
	}()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(node.URL, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// Read all the time, so that the server's keep-alive pings are answered.
	replies := make(chan []byte, 16)
	go func() {
		defer close(replies)
		for {
			_, msg, err := ws.Read(ctx)
			if err != nil {
				return
			}
			replies <- msg
		}
	}()

	// Publishers: single events, and every fourth a batch of two.
	var (
		mu       sync.Mutex
		outcomes []publishOutcome
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	count := func(f func(publishOutcome) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if f(o) {
				n++
			}
		}
		return n
	}
	published := func(o publishOutcome) bool { return o.ids != nil }
	refused := func(o publishOutcome) bool { return o.notStored }
	client := &http.Client{Timeout: 30 * time.Second}
	for p := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				o := publishOutcome{data: []string{fmt.Sprintf(`{"p":%d,"n":%d}`, p, n)}}
				req := fmt.Sprintf(`{"topic":"outage.a","data":%s}`, o.data[0])
				if n%4 == 3 {
					o.data = []string{fmt.Sprintf(`{"p":%d,"n":%d,"i":0}`, p, n), fmt.Sprintf(`{"p":%d,"n":%d,"i":1}`, p, n)}
					req = fmt.Sprintf(`{"events":[{"topic":"outage.a","data":%s},{"topic":"outage.a","data":%s}]}`, o.data[0], o.data[1])
				}
				start := time.Now()
				resp, err := client.Post(node.URL+"/v1/publish", "application/json", strings.NewReader(req))
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				var answer struct {
					ID    string
					IDs   []string
					Error struct{ Code, Message string }
				}
				_ = json.NewDecoder(resp.Body).Decode(&answer)
				resp.Body.Close()
				if took := time.Since(start); took > outageBound {
					t.Errorf("a publish took %v", took)
				}
				switch {
				case resp.StatusCode == http.StatusOK && answer.ID != "":
					o.ids = []string{answer.ID}
				case resp.StatusCode == http.StatusOK:
					o.ids = answer.IDs
				case resp.StatusCode == http.StatusServiceUnavailable && answer.Error.Code == "unavailable":
					o.unknown = strings.Contains(answer.Error.Message, "may or may not")
					o.notStored = !o.unknown
				default:
					t.Errorf("publish: %d %+v, want 200 or 503 unavailable", resp.StatusCode, answer)
					return
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	wait.For(t, 20*time.Second, "publishes before the cut", func() bool { return count(published) >= 30 })

	rl.Down()
	ready := func() int { status, _ := node.Get(t, "/readyz"); return status }
	wait.For(t, 20*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	expect503 := func(what string, do func() (*http.Response, error)) {
		t.Helper()
		start := time.Now()
		resp, err := do()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer resp.Body.Close()
		var answer struct{ Error struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&answer)
		if resp.StatusCode != http.StatusServiceUnavailable || answer.Error.Code != "unavailable" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s while cut: %d %q, Retry-After %q; want 503 unavailable with Retry-After",
				what, resp.StatusCode, answer.Error.Code, resp.Header.Get("Retry-After"))
		}
		if took := time.Since(start); took > outageBound {
			t.Errorf("%s while cut took %v", what, took)
		}
	}
	post := func(path, body string) func() (*http.Response, error) {
		return func() (*http.Response, error) {
			return client.Post(node.URL+path, "application/json", strings.NewReader(body))
		}
	}
	get := func(path string) func() (*http.Response, error) {
		return func() (*http.Response, error) { return client.Get(node.URL + path) }
	}
	expect503("a publish", post("/v1/publish", `{"topic":"outage.b","data":1}`))
	expect503("a batch", post("/v1/publish", `{"events":[{"topic":"outage.b","data":2},{"topic":"outage.b","data":3}]}`))
	expect503("history", get("/v1/topics/outage.a/history"))
	expect503("history after a cursor", get("/v1/topics/outage.a/history?after="+first.ID))
	expect503("topics", get("/v1/topics"))
	expect503("state", get("/v1/topics/outage.a/state"))
	expect503("an action", post("/v1/actions", `{"type":"echo","topic":"outage.c","payload":1}`))

	start := time.Now()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"op":"publish","ref":"1","topic":"outage.b","data":4}`)); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	select {
	case reply = <-replies:
	case <-time.After(outageBound):
	}
	var wsAnswer struct {
		Op, Ref string
		Error   struct{ Code string }
	}
	_ = json.Unmarshal(reply, &wsAnswer)
	if wsAnswer.Op != "error" || wsAnswer.Ref != "1" || wsAnswer.Error.Code != "unavailable" {
		t.Errorf("WebSocket publish while cut: %s, want an error reply with code unavailable", reply)
	}
	if took := time.Since(start); took > outageBound {
		t.Errorf("WebSocket publish while cut took %v", took)
	}
	before := count(refused)
	wait.For(t, 20*time.Second, "publishers to be refused", func() bool { return count(refused) >= before+5 })

	rl.Up()
	wait.For(t, 30*time.Second, "/readyz to recover", func() bool { return ready() == http.StatusOK })
	after := count(published)
	wait.For(t, 30*time.Second, "publishes after the cut", func() bool { return count(published) >= after+30 })
	// A short cut: the publishes in flight learn their outcome once the
	// broker is back, and are answered with their cursors.
	rl.Down()
	rl.Up()
	after = count(published)
	wait.For(t, 30*time.Second, "publishes after the short cut", func() bool { return count(published) >= after+30 })
	close(stop)
	wg.Wait()

	// The log from the first event on, compared with the answers.
	stored := map[string][]string{} // data → cursors
	var order []string              // every cursor, in the log's order
	for cursor := first.ID; ; {
		status, body := node.Get(t, "/v1/topics/outage.a/history?limit=1000&after="+cursor)
		if status != http.StatusOK {
			t.Fatalf("history: %d %s", status, body)
		}
		var page struct {
			Events []struct {
				ID   string
				Data json.RawMessage
			}
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			stored[string(e.Data)] = append(stored[string(e.Data)], e.ID)
			order = append(order, e.ID)
			cursor = e.ID
		}
		if len(page.Events) < 1000 {
			break
		}
	}
	var nPublished, nRefused, nUnknown int
	for _, o := range outcomes {
		for i, d := range o.data {
			got := stored[d]
			delete(stored, d)
			switch {
			case o.ids != nil:
				if len(got) != 1 || got[0] != o.ids[i] {
					t.Errorf("%s, answered with cursor %s, is in the log under %v", d, o.ids[i], got)
				}
			case o.notStored:
				if len(got) != 0 {
					t.Errorf("%s, answered 503, is in the log under %v", d, got)
				}
			case len(got) > 1:
				t.Errorf("%s, of unknown outcome, is in the log %d times", d, len(got))
			}
		}
		switch {
		case o.ids != nil:
			nPublished++
		case o.notStored:
			nRefused++
		default:
			nUnknown++
		}
	}
	if len(stored) > 0 {
		t.Errorf("the log holds events nobody published: %v", stored)
	}
	// The subscriber got the log as it is, through both cuts: every event
	// once, in order.
	wait.For(t, 30*time.Second, "the subscriber to receive the log", func() bool {
		liveMu.Lock()
		defer liveMu.Unlock()
		return len(live) >= len(order)
	})
	liveMu.Lock()
	if strings.Join(live, " ") != strings.Join(order, " ") {
		t.Errorf("the subscriber received %d events that differ from the log's %d", len(live), len(order))
	}
	liveMu.Unlock()
	t.Logf("%d publishes answered with cursors, %d refused, %d of unknown outcome", nPublished, nRefused, nUnknown)
	if status, body := node.Get(t, "/v1/topics/outage.b/history"); status != http.StatusOK || strings.Contains(string(body), `"id"`) {
		t.Errorf("the publishes refused while cut: history %d %s, want none", status, body)
	}
}

// TestBrokerMute: a broker that stops answering with its connections up
// (packets dropped, a hung process) gets every request that waits for it a
// 503 unavailable within the bound, as a broker that refuses connections
// does, not an answer after the broker client's retries or a 500.
func TestBrokerMute(t *testing.T) {
	for _, b := range relayedBrokers() {
		t.Run(b.name, func(t *testing.T) {
			broker := b.url(t)
			rl := relay.Start(t, b.target, relay.Options{})
			node := start(t, server.Config{Broker: strings.Replace(broker, b.target, rl.Addr(), 1)})
			status, body := node.Post(t, "/v1/publish", `{"topic":"mute.a","key":"k","data":1}`)
			if status != http.StatusOK {
				t.Fatalf("first publish: %d %s", status, body)
			}
			var first struct{ ID string }
			_ = json.Unmarshal(body, &first)
			rl.Mute()
			t.Cleanup(rl.Unmute) // before the node's own cleanup, which stops it
			client := &http.Client{Timeout: 30 * time.Second}
			var wg sync.WaitGroup
			for _, path := range []string{
				"/v1/topics/mute.a/history", "/v1/topics/mute.a/history?after=" + first.ID,
				"/v1/topics", "/v1/topics/mute.a/state", "/v1/topics/mute.a/presence",
			} {
				wg.Go(func() {
					start := time.Now()
					resp, err := client.Get(node.URL + path)
					if err != nil {
						t.Errorf("GET %s: %v", path, err)
						return
					}
					defer resp.Body.Close()
					var answer struct{ Error struct{ Code string } }
					_ = json.NewDecoder(resp.Body).Decode(&answer)
					if resp.StatusCode != http.StatusServiceUnavailable || answer.Error.Code != "unavailable" || resp.Header.Get("Retry-After") == "" {
						t.Errorf("GET %s while mute: %d %q, Retry-After %q; want 503 unavailable with Retry-After",
							path, resp.StatusCode, answer.Error.Code, resp.Header.Get("Retry-After"))
					}
					if took := time.Since(start); took > outageBound {
						t.Errorf("GET %s while mute took %v", path, took)
					}
				})
			}
			wg.Wait()
		})
	}
}
