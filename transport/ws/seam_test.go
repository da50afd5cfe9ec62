package ws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
)

// A subscriber that hands back a cursor gets every later matching event,
// in order, exactly once, while publishers keep publishing: across the
// history/live seam of one connection, and across reconnections that resume
// from the last id seen.
func TestSeamUnderConcurrentPublishing(t *testing.T) {
	const (
		publishers = 4
		perPub     = 2000
		total      = publishers * perPub
	)
	// Publishers run flat out while the race detector slows the readers, so
	// queues get room for the whole run: this test is about the seam, not
	// about slow consumers.
	e := newEnv(t, envOptions{hub: hub.Options{
		Broker:     hub.NewMemoryBroker(hub.MemoryOptions{Size: 4 * total}),
		QueueBytes: 16 << 20,
	}})

	// Every published message, and the latest cursor, which subscribers
	// sample mid-stream.
	var (
		mu        sync.Mutex
		published []*hub.Message
		latest    atomic.Pointer[string]
		count     atomic.Int64
	)
	start := e.publish("seam.start", "start")
	s := start.ID.String()
	latest.Store(&s)

	// Subscribers, each with its pattern and the point in the stream at
	// which it starts (by number of events published).
	type spec struct {
		pattern    string
		startAfter int64 // events published before it subscribes
		reconnects int   // connections it goes through
	}
	specs := []spec{
		{"seam.>", 0, 1},
		{"seam.*", 500, 1},
		{"seam.p1", 1500, 1},
		{"seam.>", 3000, 1},
		{"seam.*", 6000, 1},
		{"seam.>", 100, 4},
		{"seam.p2", 800, 3},
		{"seam.*", 2500, 5},
	}
	type result struct {
		since string
		got   []uint64
		err   error
	}
	results := make([]result, len(specs))

	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			deadline := time.Now().Add(30 * time.Second)
			for count.Load() < sp.startAfter { // poll for its point in the stream
				if time.Now().After(deadline) {
					res.err = fmt.Errorf("publishers stalled at %d events", count.Load())
					return
				}
				time.Sleep(time.Millisecond)
			}
			res.since = *latest.Load()
			res.err = runSubscriber(e, sp.pattern, res.since, sp.reconnects, &res.got)
		}()
	}

	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			topic := fmt.Sprintf("seam.p%d", p)
			for n := range perPub {
				msgs, err := e.hub.Publish(context.Background(), hub.Draft{Topic: topic, Data: json.RawMessage(fmt.Sprintf(`{"p":%d,"n":%d}`, p, n))})
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				mu.Lock()
				published = append(published, msgs[0])
				mu.Unlock()
				id := msgs[0].ID.String()
				latest.Store(&id)
				count.Add(1)
			}
		}()
	}
	pubs.Wait()
	// One end marker per publisher topic, in one batch after everything:
	// the first a subscriber sees proves it has seen all that came before.
	var end []hub.Draft
	for p := range publishers {
		end = append(end, hub.Draft{Topic: fmt.Sprintf("seam.p%d", p), Data: json.RawMessage(`"end"`)})
	}
	if _, err := e.hub.Publish(context.Background(), end...); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	slices.SortFunc(published, func(a, b *hub.Message) int { return int(a.ID.Seq) - int(b.ID.Seq) })

	for i, sp := range specs {
		res := results[i]
		if res.err != nil {
			t.Errorf("subscriber %d (%s since %s): %v", i, sp.pattern, res.since, res.err)
			continue
		}
		since, err := hub.ParseCursor(res.since)
		if err != nil {
			t.Fatal(err)
		}
		pat := hub.MustPattern(sp.pattern)
		var want []uint64
		for _, m := range published {
			if m.ID.Seq > since.Seq && pat.Match(m.Topic) {
				want = append(want, m.ID.Seq)
			}
		}
		if !slices.Equal(res.got, want) {
			t.Errorf("subscriber %d (%s since %s, %d connections): got %d events, want %d; first difference at %d",
				i, sp.pattern, res.since, sp.reconnects, len(res.got), len(want), firstDiff(res.got, want))
		}
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// runSubscriber reads pattern from since over `connections` successive
// connections, each resuming from the last id seen, until the first end
// marker. It appends the sequence numbers of the events it received to got
// and checks that they strictly increase.
func runSubscriber(e *env, pattern, since string, connections int, got *[]uint64) error {
	pat := hub.MustPattern(pattern)
	last := since
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for conn := 0; conn < connections; conn++ {
		c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPClient: e.http})
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		c.SetReadLimit(1 << 20)
		sub, _ := json.Marshal(map[string]any{"op": "subscribe", "ref": conn, "topics": []string{pattern}, "since": last})
		if err := c.Write(ctx, websocket.MessageText, sub); err != nil {
			c.CloseNow()
			return err
		}
		// Leave this connection after a random number of events, except the last one.
		quota := -1
		if conn < connections-1 {
			quota = 50 + rand.IntN(400)
		}
		acked := false
		for quota != 0 {
			_, b, err := c.Read(ctx)
			if err != nil {
				c.CloseNow()
				return fmt.Errorf("connection %d: read after %d events: %w", conn, len(*got), err)
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				c.CloseNow()
				return err
			}
			switch f.Op {
			case "ok":
				acked = true
				continue
			case "event":
			default:
				c.CloseNow()
				return fmt.Errorf("connection %d: unexpected %s", conn, b)
			}
			if !acked {
				c.CloseNow()
				return fmt.Errorf("connection %d: event before the subscribe ok", conn)
			}
			cur, err := hub.ParseCursor(f.ID)
			if err != nil {
				c.CloseNow()
				return err
			}
			if n := len(*got); n > 0 && cur.Seq <= (*got)[n-1] {
				c.CloseNow()
				return fmt.Errorf("connection %d: event %d after %d", conn, cur.Seq, (*got)[n-1])
			}
			if !pat.Match(f.Topic) {
				c.CloseNow()
				return fmt.Errorf("connection %d: event on %s does not match", conn, f.Topic)
			}
			if string(f.Data) == `"end"` {
				c.CloseNow()
				return nil
			}
			*got = append(*got, cur.Seq)
			last = f.ID
			if quota > 0 {
				quota--
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	return fmt.Errorf("no end marker after %d connections", connections)
}

// One connection, one order: overlapping patterns deliver each event once,
// and a later subscribe with an old since never goes back in the order.
func TestOneConnectionOneOrder(t *testing.T) {
	e := newEnv(t, envOptions{})
	early := e.publish("a.x", "early")
	e.publish("a.b.c", "early")

	c := e.dial(nil)
	c.subscribe("", "a.*", "a.>")
	c.send(map[string]any{"op": "subscribe", "ref": "again", "topics": []string{"a.>", "a.x"}})
	c.expect("ok")

	const n = 300
	var pubs sync.WaitGroup
	for _, topic := range []string{"a.x", "a.y", "a.b.c"} {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := range n {
				if _, err := e.hub.Publish(context.Background(), hub.Draft{Topic: topic, Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Mid-stream, ask for everything since before the connection existed:
	// the replay starts after what the connection has already been sent.
	c.send(map[string]any{"op": "subscribe", "ref": "old", "topics": []string{"a.*"}, "since": early.ID.String()})
	pubs.Wait()
	marker := e.publish("a.end", "end")

	var prev uint64
	events := 0
	for {
		f := c.recv()
		if f.Op == "ok" {
			continue
		}
		if f.Op != "event" {
			t.Fatalf("unexpected %s", f)
		}
		seq := f.seq(t)
		if seq <= prev {
			t.Fatalf("event %d after %d", seq, prev)
		}
		prev = seq
		events++
		if f.ID == marker.ID.String() {
			break
		}
	}
	// The connection's live subscriptions already cover everything since it
	// subscribed, so the old since adds nothing from before that: exactly
	// the 3n events and the marker, each once.
	if events != 3*n+1 {
		t.Fatalf("got %d events, want %d", events, 3*n+1)
	}
}
