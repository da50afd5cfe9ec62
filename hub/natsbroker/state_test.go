package natsbroker_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// node opens a started broker on stream name with a connection of its own.
func node(t *testing.T, name string, o natsbroker.Options) (*natsbroker.Broker, *nats.Conn) {
	t.Helper()
	nc, _ := natstest.Conn(t)
	o.Conn, o.Stream, o.Subjects, o.Idle = nc, name, natstest.Subjects(name), 100*time.Millisecond
	b, err := natsbroker.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, nc
}

func keyed(t testing.TB, topic, key, data string) hub.Draft {
	t.Helper()
	d := hub.Draft{Topic: topic, Key: key, Data: []byte(data)}
	if err := d.Normalize(); err != nil {
		t.Fatal(err)
	}
	return d
}

func state(t testing.TB, b hub.Broker, topic string) hub.StateSnapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := hub.ParsePattern(topic)
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.State(ctx, []hub.Pattern{p})
	if err != nil {
		t.Fatalf("failed to read state of %s: %v", topic, err)
	}
	return st
}

// summary is a state as "key=data@seq ...", in cursor order.
func summary(st hub.StateSnapshot) string {
	var s []string
	for _, m := range st.Events {
		s = append(s, fmt.Sprintf("%s=%s@%d", m.Key, m.Data, m.ID.Seq))
	}
	return strings.Join(s, " ")
}

// stored reads the state stream as it is: its messages by subject, as
// "data@seq" of the log.
func stored(t testing.TB, nc *nats.Conn, name string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	out := map[string]string{}
	s, err := js.Stream(ctx, name+"_STATE")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out
	}
	if err != nil {
		t.Fatalf("failed to open the state stream: %v", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		out[subj] = string(m.Data) + "@" + m.Header.Get("Herald-Seq")

	}
	return out
}

// TestStateTwoNodes: node 1 takes snapshots while node 2 publishes keyed
// events, single and in batches, with removals. Each snapshot is exact at
// its position, both nodes serve the same state, and the state stream,
// written by both appliers, converges on each key's latest event.
func TestStateTwoNodes(t *testing.T) {
	_, name := conn(t)
	b1, nc := node(t, name, natsbroker.Options{})
	b2, _ := node(t, name, natsbroker.Options{})
	ctx := context.Background()
	pats := []hub.Pattern{hub.MustPattern("st.a")}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 120 {
			ds := []hub.Draft{keyed(t, "st.a", fmt.Sprintf("k%d", i%9), strconv.Itoa(i))}
			if i%7 == 6 {
				ds[0].Data = []byte("null")
			}
			if i%5 == 0 {
				ds = append(ds, keyed(t, "st.a", fmt.Sprintf("k%d", (i+4)%9), strconv.Itoa(-i)), keyed(t, "st.b", "x", `1`))
			}
			if _, err := b2.Publish(ctx, ds); err != nil {
				t.Errorf("failed to publish: %v", err)
				return
			}
		}
	}()
	type snap struct {
		st    hub.StateSnapshot
		after []*hub.Message
	}
	var snaps []snap
	for range 8 {
		st := state(t, b1, "st.a")
		snaps = append(snaps, snap{st: st})
	}
	wg.Wait()
	final := state(t, b1, "st.a")
	for i, s := range snaps {
		cur := map[string]*hub.Message{}
		for _, m := range s.st.Events {
			if m.ID.Seq > s.st.Last.Seq || m.Topic != "st.a" {
				t.Fatalf("snapshot at %s holds %s", s.st.Last, m.Envelope())
			}
			cur[m.Key] = m
		}
		res, err := b1.Read(ctx, hub.ReadRequest{After: s.st.Last.Seq, Patterns: pats, Limit: 1000})
		if err != nil || res.More {
			t.Fatalf("failed to read after snapshot %d: %v (more %v)", i, err, res.More)
		}
		for _, m := range res.Messages {
			if m.ID.Seq > final.Last.Seq {
				break
			}
			if string(m.Data) == "null" {
				delete(cur, m.Key)
			} else {
				cur[m.Key] = m
			}
		}
		if len(cur) != len(final.Events) {
			t.Fatalf("snapshot %d at %s and the events after it give %d keys, the state at %s has %d",
				i, s.st.Last, len(cur), final.Last, len(final.Events))
		}
		for _, m := range final.Events {
			if c := cur[m.Key]; c == nil || c.ID != m.ID {
				t.Fatalf("snapshot %d at %s: key %s is %v by the events after it, %s in the state", i, s.st.Last, m.Key, c, m.ID)
			}
		}
	}
	if got, want := summary(state(t, b2, "st.a")), summary(final); got != want {
		t.Fatalf("node 2's state = %s\nnode 1's = %s", got, want)
	}
	// The state stream holds each key's latest event, or its removal.
	want := map[string]string{}
	res, err := b1.Read(ctx, hub.ReadRequest{Patterns: []hub.Pattern{hub.MustPattern(">")}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Messages {
		want[natstest.Subjects(name)+"_state."+m.Key+"."+m.Topic] = fmt.Sprintf("%s@%d", m.Data, m.ID.Seq)
	}
	wait.For(t, 10*time.Second, "the state stream to hold each key's latest event", func() bool {
		got := stored(t, nc, name)
		for subj, w := range want {
			// A key removed before it was written needs no tombstone.
			if got[subj] != w && !(strings.HasPrefix(w, "null@") && got[subj] == "") {
				return false
			}
		}
		for subj := range got {
			if want[subj] == "" {
				t.Fatalf("the state stream holds %s, which no event wrote", subj)
			}
		}
		return true
	})
}

// TestStateFromLog: the state is derived from the log, not from what
// publishers wrote. An event stored in the log by a publisher that then
// died is in the state; a part of an abandoned batch is not; and a state
// stream that was lost is written again from the retained log by a node
// that starts, and then outlives the log's retention.
func TestStateFromLog(t *testing.T) {
	_, name := conn(t)
	b1, nc := node(t, name, natsbroker.Options{Size: 6})
	subj := natstest.Subjects(name) + ".st.a"
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	raw := func(key, data string, h ...string) {
		t.Helper()
		m := &nats.Msg{Subject: subj, Data: []byte(data), Header: nats.Header{}}
		m.Header.Set("Herald-Time", fmt.Sprint(time.Now().UnixMicro()))
		m.Header.Set("Herald-Key", key)
		if len(h) > 0 {
			m.Header.Set("Herald-Batch", h[0])
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(ds ...hub.Draft) {
		t.Helper()
		if _, err := b1.Publish(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	publish(keyed(t, "st.a", "a", `1`))
	raw("b", `2`)                       // stored by a publisher that died before anything else
	raw("c", `3`, "dead 0 2")           // the first half of a batch...
	publish(keyed(t, "st.a", "d", `4`)) // ...abandoned
	want := "a=1@1 b=2@2 d=4@4"
	if got := summary(state(t, b1, "st.a")); got != want {
		t.Fatalf("state = %s, want %s", got, want)
	}
	// The state stream is lost; a node that starts writes it again.
	wait.For(t, 10*time.Second, "the applier", func() bool { return len(stored(t, nc, name)) == 3 })
	b1.Close()
	if err := js.DeleteStream(ctx, name+"_STATE"); err != nil {
		t.Fatal(err)
	}
	b2, _ := node(t, name, natsbroker.Options{Size: 6})
	if got := summary(state(t, b2, "st.a")); got != want {
		t.Fatalf("state after the state stream was lost = %s, want %s", got, want)
	}
	// The log's retention drops those events; the state keeps them.
	for i := range 6 {
		if _, err := b2.Publish(ctx, []hub.Draft{keyed(t, "st.b", "x", strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if bd, err := b2.Bounds(ctx); err != nil || bd.First <= 4 {
		t.Fatalf("bounds = %+v, %v; want the first events dropped", bd, err)
	}
	if got := summary(state(t, b2, "st.a")); got != want {
		t.Fatalf("state after retention = %s, want %s", got, want)
	}
	if got := summary(state(t, b2, "st.b")); got != "x=5@10" {
		t.Fatalf("state of st.b = %s, want x=5@10", got)
	}
}

// TestStateMaxBytes: past StateMaxBytes the least recently written keys
// of any topic go first (once the applier has written them), and an event
// larger than the bound on its own removes its key's older value.
func TestStateMaxBytes(t *testing.T) {
	_, name := conn(t)
	data := `"` + strings.Repeat("x", 1000) + `"`
	// Each key takes about 1200 bytes of the state stream: room for three,
	// not four.
	b, nc := node(t, name, natsbroker.Options{StateMaxBytes: 4000})
	ctx := context.Background()
	pub := func(topic, key, data string) {
		t.Helper()
		if _, err := b.Publish(ctx, []hub.Draft{keyed(t, topic, key, data)}); err != nil {
			t.Fatal(err)
		}
	}
	keys := func() string {
		var out []string
		for _, topic := range []string{"t.1", "t.2", "t.3"} {
			var ks []string
			for _, m := range state(t, b, topic).Events {
				ks = append(ks, m.Key)
			}
			out = append(out, strings.Join(ks, " "))
		}
		return strings.Join(out, "|")
	}
	pub("t.1", "a", data)
	pub("t.2", "b", data)
	pub("t.1", "c", data)
	wait.For(t, 10*time.Second, "three keys written", func() bool { return keys() == "a c|b|" })
	pub("t.1", "a", data) // a is now the most recently written
	wait.For(t, 10*time.Second, "a written again", func() bool { return keys() == "c a|b|" })
	pub("t.3", "d", data) // b, on another topic, goes
	wait.For(t, 10*time.Second, "b dropped", func() bool { return keys() == "c a||d" })
	wait.For(t, 10*time.Second, "b dropped from the state stream", func() bool { return len(stored(t, nc, name)) == 3 })
	// A node that starts reads the retained log again: it writes nothing,
	// and in particular does not bring b back.
	js, _ := jetstream.New(nc)
	lastWrite := func() uint64 {
		s, err := js.Stream(ctx, name+"_STATE")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.LastSeq
	}
	before := lastWrite()
	b2, _ := node(t, name, natsbroker.Options{StateMaxBytes: 4000})
	wait.For(t, 10*time.Second, "the new node's applier", func() bool { return b2.Applied() == 5 })
	if after := lastWrite(); after != before {
		t.Fatalf("a node that started wrote %d messages to the state stream, want none", after-before)
	}
	if got := keys(); got != "c a||d" {
		t.Fatalf("state keys after a node started = %q, want %q", got, "c a||d")
	}
	pub("t.1", "c", `"`+strings.Repeat("y", 5000)+`"`)
	wait.For(t, 10*time.Second, "c removed", func() bool { return keys() == "a||d" })
	wait.For(t, 10*time.Second, "c's tombstone in the state stream", func() bool {
		got := stored(t, nc, name)
		return len(got) == 3 && got[natstest.Subjects(name)+"_state.c.t.1"] == "null@6"
	})
	if got := keys(); got != "a||d" {
		t.Fatalf("state keys = %q once written, want a||d", got)
	}
}

// TestStateStreamLost: a log created again is a new epoch, and the state
// of the old one is not served with it.
func TestStateStreamLost(t *testing.T) {
	_, name := conn(t)
	b, nc := node(t, name, natsbroker.Options{})
	ctx := context.Background()
	if _, err := b.Publish(ctx, []hub.Draft{keyed(t, "st.a", "a", `1`)}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the applier", func() bool { return len(stored(t, nc, name)) == 1 })
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	var ms []*hub.Message
	wait.For(t, 10*time.Second, "a publish on the new log", func() bool {
		var err error
		ms, err = b.Publish(ctx, []hub.Draft{keyed(t, "st.a", "b", `2`)})
		return err == nil
	})
	st := state(t, b, "st.a")
	if st.Last.Epoch != ms[0].ID.Epoch || summary(st) != "b=2@1" {
		t.Fatalf("state on the new log = %s at %s, want b=2@1 in epoch %s", summary(st), st.Last, ms[0].ID.Epoch)
	}
}

// TestStateNotStarted: a broker that was not started has no applier, and
// says so rather than serve a state it cannot vouch for.
func TestStateNotStarted(t *testing.T) {
	nc, name := conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.State(context.Background(), []hub.Pattern{mustPat(t, "st.a")}); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("State before Start = %v, want an error", err)
	}
}

// TestSnapshotPatterns: a snapshot of several patterns is the state of
// every matching topic at one position, while another node publishes.
func TestSnapshotPatterns(t *testing.T) {
	_, name := conn(t)
	b1, _ := node(t, name, natsbroker.Options{StateMaxKeys: 4})
	b2, _ := node(t, name, natsbroker.Options{StateMaxKeys: 4})
	ctx := context.Background()
	topics := []string{"p.a", "p.b", "q.c", "r.d"}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 100 {
			d := keyed(t, topics[i%4], fmt.Sprintf("k%d", i%6), strconv.Itoa(i))
			if i%9 == 8 {
				d.Data = []byte("null")
			}
			if _, err := b2.Publish(ctx, []hub.Draft{d}); err != nil {
				t.Errorf("failed to publish: %v", err)
				return
			}
		}
	}()
	pats := []hub.Pattern{hub.MustPattern("p.*"), hub.MustPattern("q.>")}
	for range 6 {
		last, events, err := b1.Snapshot(ctx, pats)
		if err != nil {
			t.Fatal(err)
		}
		// The same state, topic by topic, from the whole log up to last.
		res, err := b1.Read(ctx, hub.ReadRequest{Patterns: pats, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]map[string]*hub.Message{}
		for _, m := range res.Messages {
			if m.ID.Seq > last.Seq {
				break
			}
			if want[m.Topic] == nil {
				want[m.Topic] = map[string]*hub.Message{}
			}
			delete(want[m.Topic], m.Key)
			if string(m.Data) != "null" {
				want[m.Topic][m.Key] = m
			}
		}
		var wantS []string
		for topic, keys := range want {
			var ms []*hub.Message
			for _, m := range keys {
				ms = append(ms, m)
			}
			slices.SortFunc(ms, func(x, y *hub.Message) int { return cmp.Compare(x.ID.Seq, y.ID.Seq) })
			for _, m := range ms[max(0, len(ms)-4):] {
				wantS = append(wantS, fmt.Sprintf("%s/%s@%d", topic, m.Key, m.ID.Seq))
			}
		}
		var gotS []string
		for i, m := range events {
			if i > 0 && m.ID.Seq <= events[i-1].ID.Seq {
				t.Fatal("snapshot not ascending by cursor")
			}
			gotS = append(gotS, fmt.Sprintf("%s/%s@%d", m.Topic, m.Key, m.ID.Seq))
		}
		slices.Sort(wantS)
		slices.Sort(gotS)
		if g, w := strings.Join(gotS, " "), strings.Join(wantS, " "); g != w {
			t.Fatalf("snapshot at %s =\n%s\nwant\n%s", last, g, w)
		}
	}
	wg.Wait()
}

// TestStateFeedOverflow: when delivery's chunks overflow the applier's
// feed, the applier reads the stream itself to catch up, and the state is
// still each key's latest event.
func TestStateFeedOverflow(t *testing.T) {
	nc, name := conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Idle: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.NarrowFeed(-1)
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				ds := []hub.Draft{keyed(t, "st.a", fmt.Sprintf("k%d", (i+g)%11), fmt.Sprintf("[%d,%d]", g, i))}
				if i%4 == 0 {
					ds = append(ds, keyed(t, "st.a", fmt.Sprintf("k%d", (i+g+5)%11), "null"))
				}
				if _, err := b.Publish(ctx, ds); err != nil {
					t.Errorf("failed to publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	res, err := b.Read(ctx, hub.ReadRequest{Patterns: []hub.Pattern{hub.MustPattern("st.a")}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, m := range res.Messages {
		want[natstest.Subjects(name)+"_state."+m.Key+".st.a"] = fmt.Sprintf("%s@%d", m.Data, m.ID.Seq)
	}
	wait.For(t, 10*time.Second, "the state stream to hold each key's latest event", func() bool {
		got := stored(t, nc, name)
		for subj, w := range want {
			if got[subj] != w && !(strings.HasPrefix(w, "null@") && got[subj] == "") {
				return false
			}
		}
		return true
	})
	if b.CatchUps() == 0 {
		t.Fatal("the applier never read the stream itself: the overflow was not exercised")
	}
	var wantState []string
	for _, m := range res.Messages {
		if w := want[natstest.Subjects(name)+"_state."+m.Key+".st.a"]; w == fmt.Sprintf("%s@%d", m.Data, m.ID.Seq) && string(m.Data) != "null" {
			wantState = append(wantState, fmt.Sprintf("%s=%s@%d", m.Key, m.Data, m.ID.Seq))
		}
	}
	if got := summary(state(t, b, "st.a")); got != strings.Join(wantState, " ") {
		t.Fatalf("state = %s\nwant %s", got, strings.Join(wantState, " "))
	}
}

// TestStateExactSmallLog: with a log that keeps 300 events, snapshots
// taken while a publisher goes on (and retention drops what the applier
// holds) are each exact at their position: the publisher's own record of
// what it stored gives the state at that position. A snapshot whose tail
// retention dropped while it read is read again.
func TestStateExactSmallLog(t *testing.T) {
	_, name := conn(t)
	b, _ := node(t, name, natsbroker.Options{Size: 300})
	ctx := context.Background()
	var mu sync.Mutex
	var stored []*hub.Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			d := keyed(t, "st.a", fmt.Sprintf("k%d", i%10), strconv.Itoa(i))
			if i%7 == 3 {
				d.Data = []byte("null")
			}
			ms, err := b.Publish(ctx, []hub.Draft{d, keyed(t, "st.b", "x", `1`)})
			if err != nil {
				t.Errorf("failed to publish: %v", err)
				return
			}
			mu.Lock()
			stored = append(stored, ms...)
			mu.Unlock()
		}
	}()
	var snaps []hub.StateSnapshot
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		snaps = append(snaps, state(t, b, "st.a"))
	}
	for _, st := range snaps {
		cur := map[string]*hub.Message{}
		for _, m := range stored {
			if m.ID.Seq > st.Last.Seq || m.Topic != "st.a" {
				continue
			}
			if string(m.Data) == "null" {
				delete(cur, m.Key)
			} else {
				cur[m.Key] = m
			}
		}
		if len(st.Events) != len(cur) {
			t.Fatalf("snapshot at %s has %d keys, the log up to it gives %d", st.Last, len(st.Events), len(cur))
		}
		for _, m := range st.Events {
			if c := cur[m.Key]; c == nil || c.ID != m.ID || !bytes.Equal(c.Data, m.Data) {
				t.Fatalf("snapshot at %s: key %s is %s, the log up to it gives %v", st.Last, m.Key, m.ID, c)
			}
		}
	}
	if len(snaps) < 3 {
		t.Fatalf("%d snapshots while publishing, want several", len(snaps))
	}
}

func mustPat(t testing.TB, s string) hub.Pattern {
	t.Helper()
	p, err := hub.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStateRemovalRace: a key set and removed within one applier hold is
// written by that applier as its removal alone. A node whose applier lags
// and wrote the set only afterwards must not make the key come back in
// the snapshots of a node whose applier is past the removal: the removal
// leaves a tombstone, and the lagging write of the older set is refused.
func TestStateRemovalRace(t *testing.T) {
	_, name := conn(t)
	ctx := context.Background()
	nc, _ := natstest.Conn(t)
	lag, err := natsbroker.New(ctx, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Idle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Each write round of lag's applier waits for the test's release.
	rounds, release, stop := make(chan []uint64), make(chan struct{}), make(chan struct{})
	lag.OnFlush(func(seqs []uint64) {
		select {
		case rounds <- seqs:
		case <-stop:
			return
		}
		select {
		case <-release:
		case <-stop:
		}
	})
	if err := lag.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lag.Close() })
	t.Cleanup(func() { close(stop) }) // runs first
	next := func() []uint64 {
		t.Helper()
		select {
		case seqs := <-rounds:
			return seqs
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the lagging applier")
			return nil
		}
	}

	set, err := lag.Publish(ctx, []hub.Draft{keyed(t, "race.a", "k", `"set"`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := next(); !slices.Equal(got, []uint64{set[0].ID.Seq}) {
		t.Fatalf("lag's first round writes %v, want the set at %d", got, set[0].ID.Seq)
	}
	removal, err := lag.Publish(ctx, []hub.Draft{keyed(t, "race.a", "k", `null`)})
	if err != nil {
		t.Fatal(err)
	}

	// A node that starts now reads both events in one hold and writes the
	// removal alone.
	nc2, _ := natstest.Conn(t)
	ahead, err := natsbroker.New(ctx, natsbroker.Options{Conn: nc2, Stream: name, Subjects: natstest.Subjects(name), Idle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var aheadWrote []uint64
	ahead.OnFlush(func(seqs []uint64) {
		mu.Lock()
		aheadWrote = append(aheadWrote, seqs...)
		mu.Unlock()
	})
	if err := ahead.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ahead.Close() })
	waitFor(t, "the applier past the removal", func() bool { return ahead.Applied() >= removal[0].ID.Seq })
	mu.Lock()
	if slices.Contains(aheadWrote, set[0].ID.Seq) {
		t.Fatalf("the applier wrote the set apart from its removal (%v): the race needs them in one hold", aheadWrote)
	}
	mu.Unlock()

	// The lagging applier writes the set now, and holds the removal.
	release <- struct{}{}
	if got := next(); !slices.Equal(got, []uint64{removal[0].ID.Seq}) {
		t.Fatalf("lag's second round writes %v, want the removal at %d", got, removal[0].ID.Seq)
	}
	if got := summary(state(t, ahead, "race.a")); got != "" {
		t.Fatalf("state after the removal: %q, want none", got)
	}
	subj := natstest.Subjects(name) + "_state.k.race.a"
	if got, want := stored(t, nc, name)[subj], "null@"+strconv.FormatUint(removal[0].ID.Seq, 10); got != want {
		t.Fatalf("state stream holds %q for the key, want the tombstone %q", got, want)
	}
}

// TestStateCompaction: the tombstone of a removal that is out of the log's
// retention and old enough goes, the keys stay, and a lagging applier's
// write of the removed key's older event is not made once its tombstone
// is gone.
func TestStateCompaction(t *testing.T) {
	nc, name := conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 5, Idle: 200 * time.Millisecond}
	lag, err := natsbroker.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	// lag's applier holds the set of "gone" until the test lets it go on.
	// "kept", set before it, keeps the state stream's oldest message older
	// than that set, so that only compaction's rule keeps it out.
	rounds, stop := make(chan []uint64, 16), make(chan struct{})
	var once sync.Once
	lag.OnFlush(func(seqs []uint64) {
		once.Do(func() {
			rounds <- seqs
			<-stop
		})
	})
	if err := lag.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lag.Close() })
	release := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(release) // runs first
	natsbroker.Pause(lag, true)
	set, err := lag.Publish(ctx, []hub.Draft{keyed(t, "cp.a", "kept", `0`), keyed(t, "cp.a", "gone", `1`)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-rounds:
	case <-ctx.Done():
		t.Fatal("timed out waiting for the lagging applier")
	}

	nc2, _ := natstest.Conn(t)
	o.Conn = nc2
	b, err := natsbroker.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	natsbroker.Pause(b, true)
	removal, err := b.Publish(ctx, []hub.Draft{keyed(t, "cp.a", "gone", `null`), keyed(t, "cp.a", "stays", `2`)})
	if err != nil {
		t.Fatal(err)
	}
	prefix := natstest.Subjects(name) + "_state."
	tomb := "null@" + strconv.FormatUint(removal[0].ID.Seq, 10)
	wait.For(t, 10*time.Second, "the tombstone and the key", func() bool {
		st := stored(t, nc, name)
		return st[prefix+"gone.cp.a"] == tomb && st[prefix+"stays.cp.a"] != ""
	})
	// The removal is still in the log: compaction keeps its tombstone.
	if err := b.Compact(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, nc, name)[prefix+"gone.cp.a"]; got != tomb {
		t.Fatalf("after compacting with the removal in the log: %q", got)
	}
	for range 6 {
		if _, err := b.Publish(ctx, []hub.Draft{{Topic: "other", Type: hub.DefaultType, Data: []byte(`1`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Compact(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, nc, name)[prefix+"gone.cp.a"]; got != tomb {
		t.Fatalf("after compacting a young tombstone: %q", got)
	}
	if err := b.Compact(ctx, 0); err != nil {
		t.Fatal(err)
	}
	st := stored(t, nc, name)
	if len(st) != 2 || st[prefix+"stays.cp.a"] == "" || st[prefix+"kept.cp.a"] == "" {
		t.Fatalf("after compacting: %v, want the kept keys alone", st)
	}
	// The lagging applier writes its set of the removed key now: it is
	// out of the log and older than half the compaction age (0 here), and
	// its key has no message, so it is taken for one whose tombstone went.
	if err := lag.Compact(ctx, 0); err != nil { // to shorten its compaction age
		t.Fatal(err)
	}
	release()
	wait.For(t, 10*time.Second, "the lagging applier past the removal", func() bool { return lag.Applied() >= removal[1].ID.Seq })
	if got, ok := stored(t, nc, name)[prefix+"gone.cp.a"]; ok {
		t.Fatalf("the lagging applier wrote the removed key back: %q (set at %d)", got, set[1].ID.Seq)
	}
	if got, want := summary(state(t, b, "cp.a")), fmt.Sprintf("kept=0@%d stays=2@%d", set[0].ID.Seq, removal[1].ID.Seq); got != want {
		t.Fatalf("state = %q", got)
	}
}
