package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/heraldpush/herald/hub"
)

// waitTimeout bounds every wait in these tests. Waits end as soon as their
// condition holds; the bound only decides how long a broken hub takes to fail.
const waitTimeout = 15 * time.Second

func newHub(t testing.TB, o hub.Options) *hub.Hub {
	t.Helper()
	h, err := hub.New(o)
	if err != nil {
		t.Fatalf("failed to start hub: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("failed to close hub: %v", err)
		}
	})
	return h
}

func pats(ps ...string) []hub.Pattern {
	out := make([]hub.Pattern, len(ps))
	for i, p := range ps {
		out[i] = hub.MustPattern(p)
	}
	return out
}

func pub(t testing.TB, h *hub.Hub, topic, data string) *hub.Message {
	t.Helper()
	msgs, err := h.Publish(context.Background(), hub.Draft{Topic: topic, Data: []byte(data)})
	if err != nil {
		t.Fatalf("failed to publish to %s: %v", topic, err)
	}
	return msgs[0]
}

func newClient(t testing.TB, h *hub.Hub, kind string) *hub.Client {
	t.Helper()
	c, err := h.NewClient(kind)
	if err != nil {
		t.Fatalf("failed to create client: %v", err)
	}
	return c
}

func subscribe(t testing.TB, c *hub.Client, req hub.SubscribeRequest) {
	t.Helper()
	if err := c.Subscribe(req); err != nil {
		t.Fatalf("failed to subscribe %v: %v", req.Patterns, err)
	}
}

// collector is a transport's writer loop reduced to its essence: it waits
// on hub.Wake, drains everything, and keeps what it got. It ends when the hub
// closes the client (Drain returns an error), which Close always does.
type collector struct {
	c      *hub.Client
	mu     sync.Mutex
	items  []hub.Item
	err    error
	change chan struct{} // closed (and replaced) whenever items or err change: wakes every waiter
	woke   chan struct{} // closed at the first wake-up
	gate   chan struct{} // draining starts when this is closed
	opened sync.Once
	done   chan struct{}
}

// collect starts draining c at once.
func collect(t testing.TB, c *hub.Client) *collector {
	col := collectGated(t, c)
	col.open()
	return col
}

// collectGated starts a writer that does not drain until open is called, so
// tests can hold a client's queue full. It still reports the first wake-up.
func collectGated(t testing.TB, c *hub.Client) *collector {
	col := &collector{c: c, change: make(chan struct{}), woke: make(chan struct{}), gate: make(chan struct{}), done: make(chan struct{})}
	go col.run()
	t.Cleanup(func() {
		c.Close()
		col.open()
		select {
		case <-col.done:
		case <-time.After(waitTimeout):
			t.Errorf("drain loop of client %d did not end after Close", c.ID())
		}
	})
	return col
}

// open lets the writer drain.
func (col *collector) open() { col.opened.Do(func() { close(col.gate) }) }

func (col *collector) run() {
	defer close(col.done)
	var buf []hub.Item
	woke := false
	for {
		<-hub.Wake(col.c)
		if !woke {
			woke = true
			close(col.woke)
			<-col.gate
		}
		var err error
		buf, err = hub.Drain(col.c, buf)
		col.mu.Lock()
		col.items = append(col.items, buf...)
		if err != nil {
			col.err = err
		}
		close(col.change)
		col.change = make(chan struct{})
		col.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (col *collector) snapshot() ([]hub.Item, error) {
	items, _, err := col.watch()
	return items, err
}

// watch returns what was received and a channel closed at the next change.
func (col *collector) watch() ([]hub.Item, <-chan struct{}, error) {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]hub.Item(nil), col.items...), col.change, col.err
}

// waitFor waits until cond holds for what the client has received so far.
func (col *collector) waitFor(t testing.TB, what string, cond func(items []hub.Item, err error) bool) []hub.Item {
	t.Helper()
	items, err := col.await(what, cond)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// await is waitFor for goroutines other than the test's: it returns an
// error instead of failing the test.
func (col *collector) await(what string, cond func(items []hub.Item, err error) bool) ([]hub.Item, error) {
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		items, changed, err := col.watch()
		if cond(items, err) {
			return items, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return items, fmt.Errorf("client %d: timed out waiting for %s; got %s (err %v)", col.c.ID(), what, describe(items), err)
		}
	}
}

// waitSeq waits until the client has received the event with seq (or later).
func (col *collector) waitSeq(t testing.TB, seq uint64) []hub.Item {
	t.Helper()
	return col.waitFor(t, fmt.Sprintf("seq %d", seq), func(items []hub.Item, _ error) bool {
		return len(items) > 0 && items[len(items)-1].Msg != nil && items[len(items)-1].Msg.ID.Seq >= seq
	})
}

// waitErr waits until the hub has closed the client and returns the reason.
func (col *collector) waitErr(t testing.TB) error {
	t.Helper()
	col.waitFor(t, "the client to be closed", func(_ []hub.Item, err error) bool { return err != nil })
	_, err := col.snapshot()
	return err
}

// describe renders items compactly for failure messages: seqs, R(reason) and raw text.
func describe(items []hub.Item) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case it.Msg != nil:
			fmt.Fprintf(&b, "%d", it.Msg.ID.Seq)
		case it.Reset != nil:
			fmt.Fprintf(&b, "R(%s@%d)", it.Reset.Reason, it.Reset.Cursor.Seq)
		case syncedOf(it) != nil:
			fmt.Fprintf(&b, "S(@%d)", syncedOf(it).Seq)
		default:
			fmt.Fprintf(&b, "raw(%s)", it.Raw)
		}
	}
	b.WriteByte(']')
	if len(items) > 60 {
		s := b.String()
		return s[:200] + " … " + s[len(s)-200:]
	}
	return b.String()
}

func msgSeqs(items []hub.Item) []uint64 {
	var out []uint64
	for _, it := range items {
		if it.Msg != nil {
			out = append(out, it.Msg.ID.Seq)
		}
	}
	return out
}

// history returns every retained event of h's broker, oldest first.
func history(t testing.TB, h *hub.Hub) []*hub.Message {
	t.Helper()
	var out []*hub.Message
	after := head(t, h).First - 1
	for {
		res, err := h.Broker().Read(context.Background(), hub.ReadRequest{After: after, Patterns: pats(">"), Limit: 4096})
		if err != nil {
			t.Fatalf("failed to read history: %v", err)
		}
		out = append(out, res.Messages...)
		if !res.More {
			return out
		}
		after = res.Next
	}
}

func head(t testing.TB, h *hub.Hub) hub.Bounds {
	t.Helper()
	b, err := h.Broker().Bounds(context.Background())
	if err != nil {
		t.Fatalf("failed to read bounds: %v", err)
	}
	return b
}

// settle waits until the hub has dispatched every event published so far,
// so a test can state exactly where a live subscription starts.
func settle(t testing.TB, h *hub.Hub) {
	t.Helper()
	last := head(t, h).Last
	eventually(t, fmt.Sprintf("dispatch up to %d", last), func() bool { return hub.Dispatched(h) >= last })
}

// eventually polls cond until it holds, for state that no channel announces.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	wait.For(t, waitTimeout, what, cond)
}

// waitClosed waits for ch to be closed.
func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// testSynced is how these tests encode a Synced (SubscribeRequest.Synced).
type testSynced struct {
	Synced bool
	Seq    uint64
	Topics []string
	Ref    string
}

// syncedFrame returns the encoder of a state subscribe whose ref is ref.
func syncedFrame(ref string) func(hub.Synced) []byte {
	return func(s hub.Synced) []byte {
		b, _ := json.Marshal(testSynced{Synced: true, Seq: s.Cursor.Seq, Topics: s.Topics, Ref: ref})
		return b
	}
}

// syncedOf decodes an item syncedFrame made, or returns nil.
func syncedOf(it hub.Item) *testSynced {
	var s testSynced
	if it.Raw == nil || json.Unmarshal(it.Raw, &s) != nil || !s.Synced {
		return nil
	}
	return &s
}

func isSynced(it hub.Item) bool { return syncedOf(it) != nil }
