package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestClientResumesAfterCut subscribes with herald.js over each transport,
// cuts the connection in the middle of a stream of events and checks that
// the page got every event exactly once and in order: the client
// reconnected by itself and resumed from its last cursor.
func TestClientResumesAfterCut(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			px := relay.Start(t, strings.TrimPrefix(s.url, "http://"), relay.Options{})
			tb := browsertest.New(t)()
			openTestPage(t, tb, px.URL())
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.got = []; window.states = [];
				window.sub = herald.subscribe(['resume.*'], (e) => got.push(e), {
					transport: %q, minBackoff: 50, maxBackoff: 300, onState: (s) => states.push(s) });
				sub.ready.then(() => true)`, tr))
			for i := 0; i < 50; i++ {
				s.publish(t, "resume.a", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 50)
			if n := px.Cut(); n == 0 {
				t.Fatal("the proxy relayed no connection to cut")
			}
			// Published while the client is away: it must catch up on them.
			for i := 50; i < 100; i++ {
				s.publish(t, "resume.b", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 100)
			ns := browsertest.Eval[[]int](t, tb, `got.map((e) => e.data.n)`)
			for i, n := range ns {
				if n != i {
					t.Fatalf("events out of order or repeated: got n=%d at %d (%v)", n, i, ns)
				}
			}
			states := browsertest.Eval[[]string](t, tb, `states`)
			if len(states) < 3 || states[0] != "connecting" || !contains(states, "reconnecting") || states[len(states)-1] != "open" {
				t.Errorf("connection states %v: want connecting, open, reconnecting … open", states)
			}
			if !browsertest.Eval[bool](t, tb, `new Set(got.map((e) => e.id)).size === got.length`) {
				t.Error("an event id was delivered twice")
			}
			browsertest.NoErrors(t, tb)
		})
	}
}

// TestClientPublishAndActions publishes from the page and runs actions whose
// promises resolve with the result event or reject with the failure.
func TestClientPublishAndActions(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	openTestPage(t, tb, s.url)
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			type outcome struct {
				ID      string `json:"id"`
				Echoed  string `json:"echoed"`
				Cursor  string `json:"cursor"`
				Failure string `json:"failure"`
			}
			got := browsertest.Eval[outcome](t, tb, fmt.Sprintf(`(async () => {
				const seen = [];
				const sub = herald.subscribe(['page.%[1]s'], (e) => seen.push(e), { transport: %[1]q });
				await sub.ready;
				const pub = await herald.publish('page.%[1]s', 'note', { text: 'from the page' });
				while (seen.length === 0) await new Promise((r) => setTimeout(r, 10));
				sub.close();
				const ev = await herald.action('echo', 'todo.%[1]s', { item: 'milk' }, { transport: %[1]q });
				let failure = '';
				try {
					await herald.action('shop.buy', 'shop.%[1]s', { item: 'milk' }, { transport: %[1]q });
				} catch (e) { failure = e.name + ' ' + e.code + ': ' + e.message; }
				return { id: pub.id, cursor: seen[0].id, echoed: ev.data.result.item, failure };
			})()`, tr))
			if got.ID == "" || got.ID != got.Cursor {
				t.Errorf("publish returned id %q, the subscription saw %q", got.ID, got.Cursor)
			}
			if got.Echoed != "milk" {
				t.Errorf("echo action result %q, want milk", got.Echoed)
			}
			if got.Failure != "HeraldError out_of_stock: no milk left" {
				t.Errorf("failing action rejected with %q", got.Failure)
			}
		})
	}
	browsertest.NoErrors(t, tb) // before the request below, which the browser logs as a failed load
	rejected := browsertest.Eval[string](t, tb, `herald.publish('bad topic!', 'x', 1).then(() => 'resolved', (e) => e.code + ' ' + e.status)`)
	if rejected != "invalid_topic 400" {
		t.Errorf("publishing to a bad topic: %q, want invalid_topic 400", rejected)
	}
}

// waitCount polls a numeric expression until it reaches want.
func waitCount(t *testing.T, tb *browsertest.Tab, expr string, want int) {
	t.Helper()
	var n int
	wait.For(t, 20*time.Second, fmt.Sprintf("%s to reach %d", expr, want), func() bool {
		n = browsertest.Eval[int](t, tb, expr)
		return n >= want
	})
	if n != want {
		t.Fatalf("%s = %d, want %d", expr, n, want)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestClientSurvivesRestart restarts the server under a subscribed page: a
// new process on the same address, whose memory broker starts a new epoch.
// The client reconnects by itself, reports the reset (the events it had
// cannot be resumed from), and receives what the new server publishes.
func TestClientSurvivesRestart(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			first := newStack(t)
			addr := first.srv.Listener.Addr().String()
			tb := browsertest.New(t)()
			openTestPage(t, tb, first.url)
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.got = []; window.resets = [];
				window.sub = herald.subscribe(['restart.*'], (e) => got.push(e.data.n), {
					transport: %q, minBackoff: 50, maxBackoff: 300, onReset: (r) => resets.push(r) });
				sub.ready.then(() => true)`, tr))
			for i := 0; i < 10; i++ {
				first.publish(t, "restart.a", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 10)

			first.stop()
			browsertest.WaitFor(t, tb, "the client to notice", `sub.state === 'reconnecting'`)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listening again on %s: %v", addr, err)
			}
			second := newStackOn(t, ln, nil)
			browsertest.WaitFor(t, tb, "the reset", `resets.length === 1 && sub.state === 'open'`)
			reset := browsertest.Eval[map[string]any](t, tb, `resets[0]`)
			if reset["reason"] != "epoch_changed" || reset["id"] == "" {
				t.Errorf("reset %v: want reason epoch_changed and the new head cursor", reset)
			}
			for i := 10; i < 15; i++ {
				second.publish(t, "restart.b", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 15)
			if got := browsertest.Eval[[]int](t, tb, `got`); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9 10 11 12 13 14]" {
				t.Errorf("events %v", got)
			}
		})
	}
}

// TestClientReady publishes from the page right after the subscription's
// ready promise resolved: the event must arrive, so ready means the server
// has the subscription. A subscription the server refuses, or one closed
// before it opened, rejects ready instead of leaving it pending for ever;
// so does an action whose result subscription is refused.
func TestClientReady(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	openTestPage(t, tb, s.url)
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`(async () => {
				window.seen_%[1]s = [];
				const sub = herald.subscribe(['ready.%[1]s'], (e) => seen_%[1]s.push(e.data.n), { transport: %[1]q });
				await sub.ready;
				await herald.publish('ready.%[1]s', 'note', { n: 1 });
				return true;
			})()`, tr))
			browsertest.WaitFor(t, tb, "the event published after ready", fmt.Sprintf(`seen_%s.join() === '1'`, tr))
		})
	}
	browsertest.NoErrors(t, tb) // before the refused requests below, which the browser logs

	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr+" refused", func(t *testing.T) {
			// settled is what ready did within 10 s: 'resolved',
			// 'rejected CODE', or 'pending'.
			const settled = `(p) => Promise.race([
				p.then(() => 'resolved', (e) => 'rejected ' + e.code),
				new Promise((r) => setTimeout(() => r('pending'), 10000)),
			])`
			got := browsertest.Eval[string](t, tb, fmt.Sprintf(`(%s)(herald.subscribe(['bad topic!'], () => {}, { transport: %q }).ready)`, settled, tr))
			if got != "rejected invalid_pattern" {
				t.Errorf("ready of a refused subscription: %s, want rejected invalid_pattern", got)
			}
			got = browsertest.Eval[string](t, tb, fmt.Sprintf(`(() => {
				const sub = herald.subscribe(['ready.closed'], () => {}, { transport: %q });
				sub.close();
				return (%s)(sub.ready);
			})()`, tr, settled))
			if got != "rejected closed" {
				t.Errorf("ready of a subscription closed before it opened: %s, want rejected closed", got)
			}
			// An action waits for its result subscription's ready: a refused
			// one rejects the action with the refusal, not a timeout later.
			got = browsertest.Eval[string](t, tb, fmt.Sprintf(`herald.action('echo', 'bad topic!', {}, { transport: %q, timeout: 5000 })
				.then(() => 'resolved', (e) => 'rejected ' + e.code)`, tr))
			if got != "rejected invalid_pattern" {
				t.Errorf("action whose result subscription is refused: %s, want rejected invalid_pattern", got)
			}
		})
	}
}

// TestClientRewind subscribes with rewind over each transport: the page
// gets the newest three retained events of its patterns, oldest first,
// then live ones; after a cut it resumes from its last event and does not
// rewind again.
func TestClientRewind(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			for i := 0; i < 10; i++ {
				s.publish(t, []string{"rw.a", "rw.b", "other"}[i%3], "tick", map[string]int{"n": i})
			}
			px := relay.Start(t, strings.TrimPrefix(s.url, "http://"), relay.Options{})
			tb := browsertest.New(t)()
			openTestPage(t, tb, px.URL())
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.got = [];
				window.sub = herald.subscribe(['rw.*'], (e) => got.push(e.data.n), {
					transport: %q, rewind: 3, minBackoff: 50, maxBackoff: 300 });
				sub.ready.then(() => true)`, tr))
			waitCount(t, tb, "got.length", 3)
			for i := 10; i < 13; i++ {
				s.publish(t, "rw.a", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 6)
			if n := px.Cut(); n == 0 {
				t.Fatal("the proxy relayed no connection to cut")
			}
			for i := 13; i < 15; i++ {
				s.publish(t, "rw.b", "tick", map[string]int{"n": i})
			}
			waitCount(t, tb, "got.length", 8)
			if got := browsertest.Eval[string](t, tb, `got.join()`); got != "6,7,9,10,11,12,13,14" {
				t.Fatalf("events %s, want 6,7,9 (the newest three of rw.*), then 10 to 14", got)
			}
			browsertest.NoErrors(t, tb)
		})
	}
}

// TestClientPresence keeps a live member list in the page over each
// transport: the page's own membership (join), a member that joins and
// leaves from elsewhere, and the list exact after each change.
func TestClientPresence(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			early, err := s.hub.NewClient("test")
			if err != nil {
				t.Fatal(err)
			}
			defer early.Close()
			if err := early.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("room.p")}, Presence: true, User: "early"}); err != nil {
				t.Fatal(err)
			}
			tb := browsertest.New(t)()
			openTestPage(t, tb, s.url)
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.changes = 0;
				window.room = herald.presence('room.p', { transport: %q, join: true, info: { n: 'page' },
					onChange: () => changes++ });
				room.ready.then(() => true)`, tr))
			waitCount(t, tb, "room.clients", 2)
			if !browsertest.Eval[bool](t, tb, `room.members.has(room.client) && room.users === 1`) {
				t.Errorf("members %s: want the page itself and one user", browsertest.Eval[string](t, tb, `JSON.stringify([...room.members.values()])`))
			}
			if tr == "ws" && browsertest.Eval[string](t, tb, `JSON.stringify(room.members.get(room.client).info)`) != `{"n":"page"}` {
				t.Errorf("the page's own info is not in its member")
			}
			late, err := s.hub.NewClient("test")
			if err != nil {
				t.Fatal(err)
			}
			if err := late.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("room.p")}, Presence: true, User: "late"}); err != nil {
				t.Fatal(err)
			}
			waitCount(t, tb, "room.clients", 3)
			if !browsertest.Eval[bool](t, tb, fmt.Sprintf(`room.members.has(%q) && room.users === 2`, late.ConnID())) {
				t.Errorf("the late member is missing")
			}
			early.Close()
			late.Close()
			wait.For(t, 20*time.Second, "the two leaves", func() bool {
				return browsertest.Eval[int](t, tb, "room.clients") == 1
			})
			p, err := s.hub.Presence(context.Background(), "room.p")
			if err != nil || p.Clients != 1 || !browsertest.Eval[bool](t, tb, fmt.Sprintf(`room.members.has(%q)`, clientOf(t, p))) {
				t.Errorf("the page's list and the server's (%v, %v) differ", p, err)
			}
			browsertest.Eval[bool](t, tb, `room.close(); true`)
			wait.For(t, 20*time.Second, "the page to leave", func() bool {
				p, err := s.hub.Presence(context.Background(), "room.p")
				return err == nil && p.Clients == 0
			})
			browsertest.NoErrors(t, tb)
		})
	}
}

func clientOf(t *testing.T, p hub.Presence) string {
	t.Helper()
	var m struct{ Client string }
	if len(p.Members) == 0 || json.Unmarshal(p.Members[0], &m) != nil {
		t.Fatalf("no member in %v", p)
	}
	return m.Client
}
