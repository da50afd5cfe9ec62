package hub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestSlowConsumerLive: a client whose writer never drains is failed with
// ErrSlowConsumer once its queue is full; publishers never wait for it and
// the other clients get everything.
func TestSlowConsumerLive(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 2, ShardBuffer: 4, QueueBytes: 32 << 10})
	slow := newClient(t, h, "sse")
	defer slow.Close()
	subscribe(t, slow, hub.SubscribeRequest{Patterns: pats("sc.>")})
	var fast []*collector
	for range 4 {
		c := newClient(t, h, "ws")
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("sc.*")})
		fast = append(fast, collect(t, c))
	}
	// Far more than the slow client's queue holds. The publisher lets the
	// draining clients keep up (a window of 32 events, well inside their
	// queues) so only the slow client can overflow; it never waits for it.
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	done := make(chan error, 1)
	var last *hub.Message
	go func() {
		for i := range n {
			msgs, err := h.Publish(ctx, hub.Draft{Topic: "sc.t", Data: fmt.Appendf(nil, "%d", i)})
			if err != nil {
				done <- err
				return
			}
			last = msgs[0]
			if i%32 == 31 {
				for _, col := range fast {
					if _, err := col.await("the window", func(items []hub.Item, err error) bool {
						return err != nil || len(items) > 0 && items[len(items)-1].Msg.ID.Seq >= last.ID.Seq
					}); err != nil {
						done <- err
						return
					}
				}
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("failed to publish: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Publish blocked on a client that does not drain")
	}
	for _, col := range fast {
		items := col.waitSeq(t, last.ID.Seq)
		if len(items) != n {
			t.Fatalf("a draining client got %d of %d events", len(items), n)
		}
	}
	eventually(t, "the slow client to be failed", func() bool { return hub.Err(slow) != nil })
	if _, err := hub.Drain(slow, nil); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Drain = %v, want ErrSlowConsumer", err)
	}
	select {
	case <-hub.Wake(slow):
	default:
		t.Fatal("a failed client's writer was not woken")
	}
	st := h.Stats()
	if st.SlowKicked != 1 || st.Published != n || st.Delivered < 4*n {
		t.Fatalf("Stats = %+v, want 1 kicked, %d published, >= %d delivered", st, n, 4*n)
	}
	if slow.Queue([]byte("x")) {
		t.Fatal("Queue on a failed client succeeded")
	}
	if err := slow.Subscribe(hub.SubscribeRequest{Patterns: pats("x")}); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Subscribe on a failed client = %v", err)
	}
}

// TestSlowConsumerReplay: a replay to a client that never drains gives up
// after ReplayWait and fails the client as a slow consumer.
func TestSlowConsumerReplay(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 1, QueueBytes: 1 << 10, ReplayWait: 20 * time.Millisecond})
	for i := range 100 {
		pub(t, h, "sr.a", fmt.Sprint(i))
	}
	c := newClient(t, h, "ws")
	defer c.Close()
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("sr.a"), Since: cur(h, 0)})
	eventually(t, "the replay to give up", func() bool { return hub.Err(c) != nil })
	if _, err := hub.Drain(c, nil); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Drain = %v, want ErrSlowConsumer", err)
	}
	if st := h.Stats(); st.SlowKicked != 1 {
		t.Fatalf("SlowKicked = %d, want 1", st.SlowKicked)
	}
}

// TestQueueAndFail: transport frames are queued in order with events; a
// reply that overflows the queue and a transport-reported write timeout
// both fail the client as a slow consumer.
func TestQueueAndFail(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 1, QueueBytes: 1 << 10})
	c := newClient(t, h, "ws")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("qf"), Ack: []byte("ok")})
	m := pub(t, h, "qf", "1")
	settle(t, h)
	if !c.Queue([]byte("pong")) {
		t.Fatal("Queue failed")
	}
	items, err := hub.Drain(c, nil)
	if err != nil || len(items) != 3 || string(items[0].Raw) != "ok" || items[1].Msg != m || string(items[2].Raw) != "pong" {
		t.Fatalf("Drain = %s, %v; want ok, event, pong", describe(items), err)
	}
	if !c.Queue(make([]byte, 10)) || c.Queue(make([]byte, 2<<10)) {
		t.Fatal("an overflowing reply was queued")
	}
	if _, err := hub.Drain(c, nil); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Drain = %v", err)
	}
	c.Close()

	c2 := newClient(t, h, "ws")
	defer c2.Close()
	c2.Fail(hub.ErrSlowConsumer)
	c2.Fail(hub.ErrGoingAway) // the first reason sticks
	if err := hub.Err(c2); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Err = %v", err)
	}
	if st := h.Stats(); st.SlowKicked != 2 {
		t.Fatalf("SlowKicked = %d, want 2", st.SlowKicked)
	}
}

// TestUnsubscribe: removing a pattern stops its events; an event matched by
// another remaining pattern still comes, once.
func TestUnsubscribe(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 2})
	c := newClient(t, h, "ws")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("u.a", "u.*", "marker")})
	m1 := pub(t, h, "u.a", "1")
	col.waitSeq(t, m1.ID.Seq)
	c.Unsubscribe(pats("u.a", "never.subscribed"))
	m2 := pub(t, h, "u.a", "2") // still matched by u.*
	col.waitSeq(t, m2.ID.Seq)
	c.Unsubscribe(pats("u.*"))
	pub(t, h, "u.a", "3")
	pub(t, h, "u.b", "4")
	mk := pub(t, h, "marker", "5")
	// Delivery is in order, so the marker proves the two before it were not sent.
	wantSeqs(t, col.waitSeq(t, mk.ID.Seq), m1.ID.Seq, m2.ID.Seq, mk.ID.Seq)
	if got := c.Patterns(); !slices.Equal(got, []string{"marker"}) {
		t.Fatalf("Patterns = %v", got)
	}
	// Subscribing again works like the first time.
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("u.a")})
	m6 := pub(t, h, "u.a", "6")
	wantSeqs(t, col.waitSeq(t, m6.ID.Seq), m1.ID.Seq, m2.ID.Seq, mk.ID.Seq, m6.ID.Seq)
}

// TestOverlappingPatternsOnce: an event matched by every pattern of a client
// is delivered once, live and in replay.
func TestOverlappingPatternsOnce(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 1})
	all := pats("o.a.b", "o.*.b", "o.>", "*.a.*", ">", "o.a.>")
	live := newClient(t, h, "ws")
	liveCol := collect(t, live)
	subscribe(t, live, hub.SubscribeRequest{Patterns: all})
	var seqs []uint64
	for range 3 {
		seqs = append(seqs, pub(t, h, "o.a.b", "1").ID.Seq)
	}
	wantSeqs(t, liveCol.waitSeq(t, seqs[2]), seqs...)
	rep := newClient(t, h, "ws")
	repCol := collect(t, rep)
	subscribe(t, rep, hub.SubscribeRequest{Patterns: all, Since: cur(h, 0)})
	wantSeqs(t, repCol.waitSeq(t, seqs[2]), seqs...)
}

// TestTopics: subscriber counts per pattern as written, summed over shards,
// plus retained topics with their event counts; Close and Unsubscribe
// remove counts.
func TestTopics(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, hub.Options{Shards: 4})
	var cs []*hub.Client
	for _, ps := range [][]string{{"t.a", "t.*"}, {"t.*"}, {"t.>", "t.a"}, {"t.*"}, {"z.*.q"}} {
		c := newClient(t, h, "ws")
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats(ps...)})
		cs = append(cs, c)
	}
	pub(t, h, "t.a", "1")
	pub(t, h, "t.a", "2")
	pub(t, h, "x.y", "3")
	check := func(want string) {
		t.Helper()
		ts, err := h.Topics(ctx)
		if err != nil {
			t.Fatalf("failed to list topics: %v", err)
		}
		if got := fmt.Sprint(ts); got != want {
			t.Fatalf("Topics =\n %s\nwant\n %s", got, want)
		}
	}
	check("[{t.* 3 0} {t.> 1 0} {t.a 2 2} {x.y 0 1} {z.*.q 1 0}]")
	cs[1].Close()
	cs[0].Unsubscribe(pats("t.*"))
	check("[{t.* 1 0} {t.> 1 0} {t.a 2 2} {x.y 0 1} {z.*.q 1 0}]")
	for _, c := range cs {
		c.Close()
	}
	check("[{t.a 0 2} {x.y 0 1}]")
	if st := h.Stats(); len(st.Clients) != 1 || st.Clients["ws"] != 0 {
		t.Fatalf("Stats().Clients = %v after closing all", st.Clients)
	}
}

func TestStatsClients(t *testing.T) {
	h := newHub(t, hub.Options{})
	a := newClient(t, h, "sse")
	b := newClient(t, h, "ws")
	c := newClient(t, h, "ws")
	if st := h.Stats(); st.Clients["sse"] != 1 || st.Clients["ws"] != 2 {
		t.Fatalf("Clients = %v", st.Clients)
	}
	b.Close()
	b.Close() // idempotent: counted once
	if st := h.Stats(); st.Clients["sse"] != 1 || st.Clients["ws"] != 1 {
		t.Fatalf("Clients = %v", st.Clients)
	}
	if a.ID() == c.ID() {
		t.Fatal("client IDs collide")
	}
	a.Close()
	c.Close()
	if err := b.Subscribe(hub.SubscribeRequest{Patterns: pats("a")}); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v", err)
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 12})})
	var a []*hub.Message
	for i := range 6 {
		a = append(a, pub(t, h, "h.a", fmt.Sprint(i)))
		pub(t, h, "h.b", fmt.Sprint(i))
	}
	// seqs: h.a at 1,3,5,7,9,11; h.b at 2,4,...,12. All 12 retained.
	ids := func(ms []*hub.Message) []uint64 { return seqs(ms) }
	get := func(topic, after string, limit int) ([]*hub.Message, error) {
		return h.History(ctx, topic, after, limit)
	}
	if got, err := get("h.a", "", 3); err != nil || fmt.Sprint(ids(got)) != "[7 9 11]" {
		t.Fatalf("newest 3 = %v, %v", ids(got), err)
	}
	if got, err := get("h.a", "", 100); err != nil || fmt.Sprint(ids(got)) != "[1 3 5 7 9 11]" {
		t.Fatalf("newest 100 = %v, %v", ids(got), err)
	}
	if got, err := get("h.a", a[1].ID.String(), 2); err != nil || fmt.Sprint(ids(got)) != "[5 7]" {
		t.Fatalf("after %s limit 2 = %v, %v", a[1].ID, ids(got), err)
	}
	if got, err := get("h.a", a[5].ID.String(), 10); err != nil || len(got) != 0 {
		t.Fatalf("after the newest = %v, %v", ids(got), err)
	}
	if got, err := get("h.none", "", 10); err != nil || len(got) != 0 {
		t.Fatalf("unknown topic = %v, %v", ids(got), err)
	}
	if got, err := get("h.a", cur(h, 0), 10); err != nil || len(got) != 6 {
		t.Fatalf("after 0 = %v, %v", ids(got), err)
	}
	// Retention moves: after a cursor older than it is history_gone.
	pub(t, h, "h.b", "100")
	pub(t, h, "h.b", "101") // retained now: 3..14
	if _, err := get("h.a", cur(h, 1), 10); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("after 1 = %v, want ErrHistoryGone", err)
	}
	if got, err := get("h.a", cur(h, 2), 10); err != nil || fmt.Sprint(ids(got)) != "[3 5 7 9 11]" {
		t.Fatalf("after 2 = %v, %v", ids(got), err)
	}
	other := newHub(t, hub.Options{})
	foreign := pub(t, other, "h.a", "1").ID.String()
	errCases := []struct {
		topic, after string
		limit        int
		want         error
	}{
		{"h.a", foreign, 10, hub.ErrHistoryGone},
		{"h.a", "garbage", 10, hub.ErrBadCursor},
		{"h.a", "abc-", 10, hub.ErrBadCursor},
		{"h.*", "", 10, hub.ErrInvalidTopic},
		{"", "", 10, hub.ErrInvalidTopic},
		{"h..a", "", 10, hub.ErrInvalidTopic},
	}
	for _, c := range errCases {
		if _, err := get(c.topic, c.after, c.limit); !errors.Is(err, c.want) {
			t.Errorf("History(%q, %q) = %v, want %v", c.topic, c.after, err, c.want)
		}
	}
	for _, limit := range []int{0, -1} {
		if _, err := get("h.a", "", limit); err == nil {
			t.Errorf("limit %d accepted", limit)
		}
	}
}

// TestPublishErrors: a batch is all or nothing: one bad draft rejects it
// with the right error and nothing is appended.
func TestPublishErrors(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, hub.Options{})
	good := hub.Draft{Topic: "p.a", Data: []byte("1")}
	cases := []struct {
		bad  hub.Draft
		want error
	}{
		{hub.Draft{Topic: "p.*"}, hub.ErrInvalidTopic},
		{hub.Draft{Topic: "p.a", Type: "herald.reset"}, hub.ErrInvalidType},
		{hub.Draft{Topic: "p.a", Data: []byte("{")}, hub.ErrInvalidData},
	}
	for _, c := range cases {
		if _, err := h.Publish(ctx, good, c.bad, good); !errors.Is(err, c.want) {
			t.Errorf("Publish(%+v) = %v, want %v", c.bad, err, c.want)
		}
	}
	if b := head(t, h); b.Last != 0 {
		t.Fatalf("a rejected batch appended %d events", b.Last)
	}
	if msgs, err := h.Publish(ctx); err != nil || len(msgs) != 0 {
		t.Fatalf("empty Publish = %v, %v", msgs, err)
	}
	msgs, err := h.Publish(ctx, good, hub.Draft{Topic: "p.b", Data: []byte(" [ 1 , 2 ] ")}, good)
	if err != nil || fmt.Sprint(seqs(msgs)) != "[1 2 3]" || string(msgs[1].Data) != "[1,2]" || msgs[1].Type != "message" {
		t.Fatalf("batch = %v, %v", msgs, err)
	}
	if st := h.Stats(); st.Published != 3 {
		t.Fatalf("Published = %d", st.Published)
	}
}

// TestShutdown: open clients are failed with ErrGoingAway, new ones are
// refused, publishing keeps working until Close, and Close ends every
// goroutine the hub started (goleak checks at the end of the package).
func TestShutdown(t *testing.T) {
	ctx := context.Background()
	h, err := hub.New(hub.Options{Shards: 3, QueueBytes: 1 << 10, ReplayWait: waitTimeout})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		pub(t, h, "sd.a", fmt.Sprint(i))
	}
	settle(t, h) // or the live clients below get the tail of these and overflow
	var cols []*collector
	for i := range 6 {
		c := newClient(t, h, []string{"sse", "ws"}[i%2])
		cols = append(cols, collect(t, c))
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("sd.*")})
		if i%3 == 0 {
			// A replay held by a writer that does not drain.
			col := collectGated(t, newClient(t, h, "ws"))
			subscribe(t, col.c, hub.SubscribeRequest{Patterns: pats("sd.a"), Since: cur(h, 0)})
			cols = append(cols, col)
		}
	}
	h.Shutdown()
	for _, col := range cols {
		col.open()
		if err := col.waitErr(t); !errors.Is(err, hub.ErrGoingAway) {
			t.Fatalf("client %d closed with %v, want ErrGoingAway", col.c.ID(), err)
		}
	}
	if _, err := h.NewClient("sse"); !errors.Is(err, hub.ErrGoingAway) {
		t.Fatalf("NewClient after Shutdown = %v", err)
	}
	if err := h.Ready(ctx); !errors.Is(err, hub.ErrGoingAway) {
		t.Fatalf("Ready after Shutdown = %v", err)
	}
	if _, err := h.Publish(ctx, hub.Draft{Topic: "sd.a"}); err != nil {
		t.Fatalf("Publish after Shutdown = %v", err)
	}
	if got, err := h.History(ctx, "sd.a", "", 1); err != nil || len(got) != 1 {
		t.Fatalf("History after Shutdown = %v, %v", got, err)
	}
	cctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := h.Close(cctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := h.Publish(ctx, hub.Draft{Topic: "sd.a"}); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
	if err := h.Ready(ctx); err == nil {
		t.Fatal("Ready after Close = nil")
	}
}

// TestCloseWithoutShutdown: Close alone fails clients and stops everything,
// including replays waiting on a full queue and publishers blocked on a full
// shard buffer.
func TestCloseWithoutShutdown(t *testing.T) {
	ctx := context.Background()
	h, err := hub.New(hub.Options{Shards: 2, ShardBuffer: 1, QueueBytes: 1 << 10, ReplayWait: waitTimeout})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		pub(t, h, "cw.a", fmt.Sprint(i))
	}
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("cw.a"), Since: cur(h, 0)})
	waitClosed(t, col.woke, "the replay to start")
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := h.Publish(ctx, hub.Draft{Topic: "cw.a"}); err != nil {
					return // ErrClosed once Close has begun
				}
			}
		}()
	}
	cctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := h.Close(cctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	wg.Wait()
	col.open()
	if err := col.waitErr(t); !errors.Is(err, hub.ErrGoingAway) {
		t.Fatalf("client closed with %v, want ErrGoingAway", err)
	}
}

// TestStatsConnectionsAndQueues: the counters an operator reads (package
// metrics) follow connections from open to their end, by reason, and
// what their queues hold.
func TestStatsConnectionsAndQueues(t *testing.T) {
	h := newHub(t, hub.Options{QueueBytes: 4 << 10})
	slow := newClient(t, h, "sse")
	subscribe(t, slow, hub.SubscribeRequest{Patterns: pats("q.*")})
	left := newClient(t, h, "ws")

	pub(t, h, "q.a", `"one"`)
	wait.For(t, waitTimeout, "the event to be queued", func() bool { return h.Stats().QueueBytes > 0 })
	if st := h.Stats(); st.QueueBytes != st.QueueBytesMax || st.Connects["sse"] != 1 || st.Connects["ws"] != 1 {
		t.Fatalf("one queued event: %+v", st)
	}
	// Nobody drains the queue: the client overflows it and is dropped as a
	// slow consumer, its queued events with it.
	big := `"` + strings.Repeat("x", 1000) + `"`
	for range 8 {
		pub(t, h, "q.a", big)
	}
	wait.For(t, waitTimeout, "the slow consumer to be dropped", func() bool { return h.Stats().SlowKicked == 1 })
	slow.Close()
	left.Close()
	st := h.Stats()
	if st.Dropped < 1 || st.QueueBytes != 0 {
		t.Fatalf("after the overflow: dropped %d, queue bytes %d", st.Dropped, st.QueueBytes)
	}
	if st.Disconnects["sse"]["slow_consumer"] != 1 || st.Disconnects["ws"]["closed"] != 1 || st.Clients["sse"] != 0 {
		t.Fatalf("disconnects %v, clients %v", st.Disconnects, st.Clients)
	}
}

// TestDisconnectOf pins what a client that ended for each reason is
// counted as and closed with.
func TestDisconnectOf(t *testing.T) {
	refusal := errors.New("unauthorized: the token has expired")
	for _, tc := range []struct {
		err    error
		label  string
		code   uint16
		reason string
	}{
		{nil, "closed", 1001, "server going away"},
		{hub.ErrClosed, "closed", 1001, "server going away"},
		{fmt.Errorf("write: %w", hub.ErrSlowConsumer), "slow_consumer", 4008, "slow consumer"},
		{hub.ErrGoingAway, "shutdown", 1001, "server going away"},
		{hub.ErrEpochChanged, "log_replaced", 1012, "event log replaced; reconnect"},
		{hub.ErrUnavailable, "error", 1013, "broker unavailable"},
		{hub.Unavailable(errors.New("dial tcp: refused")), "error", 1013, "broker unavailable"},
		{hub.Refused("token expired", refusal), "unauthorized", 1008, "token expired"},
		{errors.New("broker down"), "error", 1001, "server going away"},
	} {
		d := hub.DisconnectOf(tc.err)
		if d.Label != tc.label || d.Code != tc.code || d.Reason != tc.reason {
			t.Errorf("DisconnectOf(%v) = %+v, want %s %d %q", tc.err, d, tc.label, tc.code, tc.reason)
		}
	}
	if err := hub.Refused("token expired", refusal); !errors.Is(err, refusal) {
		t.Errorf("Refused(…, cause) does not match its cause")
	}
}
