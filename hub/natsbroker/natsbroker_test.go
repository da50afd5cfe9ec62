package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// conn is natstest.Conn that also deletes the stream's state stream when
// the test ends.
func conn(t testing.TB) (*nats.Conn, string) {
	t.Helper()
	nc, name := natstest.Conn(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if js, err := jetstream.New(nc); err == nil {
			_ = js.DeleteStream(ctx, name+"_STATE")
			_ = js.DeleteStream(ctx, name+"_PRES")
			_ = js.DeleteKeyValue(ctx, name+"_NODES")
		}
	})
	return nc, name
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, o brokertest.Options) hub.Broker {
		nc, name := conn(t)
		b, err := natsbroker.New(context.Background(), natsbroker.Options{
			Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Idle: 200 * time.Millisecond,
			StateMaxKeys: o.StateMaxKeys, PresenceMaxMembers: o.PresenceMaxMembers, NodeTTL: o.NodeTTL,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestCluster(t *testing.T) {
	brokertest.RunCluster(t, newCluster)
	brokertest.RunControl(t, 2, newCluster)
	brokertest.RunPresenceCluster(t, newCluster, func(b hub.Broker) { natsbroker.Halt(b.(*natsbroker.Broker)) })
}

func newCluster(t *testing.T, n int, o brokertest.Options) []hub.Broker {
	_, name := conn(t)
	var bs []hub.Broker
	for range n {
		nc, _ := natstest.Conn(t) // a connection per node
		b, err := natsbroker.New(context.Background(), natsbroker.Options{
			Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Idle: 200 * time.Millisecond,
			StateMaxKeys: o.StateMaxKeys, PresenceMaxMembers: o.PresenceMaxMembers, NodeTTL: o.NodeTTL,
		})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

// collector records deliveries for the tests below.
type collector struct {
	mu   sync.Mutex
	msgs []*hub.Message
}

func (c *collector) deliver(ms []*hub.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, ms...)
	c.mu.Unlock()
}

func (c *collector) snapshot() []*hub.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*hub.Message(nil), c.msgs...)
}

// waitFor polls until cond holds, or fails the test.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func datas(ms []*hub.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Data))
	}
	return strings.Join(s, ",")
}

func open(t testing.TB) (*natsbroker.Broker, *nats.Conn, string, *collector) {
	t.Helper()
	nc, name := conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Idle: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	if err := b.Start(col.deliver); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, nc, name, col
}

func publish(t *testing.T, b hub.Broker, topic string, data ...string) []*hub.Message {
	t.Helper()
	var ds []hub.Draft
	for _, d := range data {
		dr := hub.Draft{Topic: topic, Data: []byte(d)}
		if err := dr.Normalize(); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, dr)
	}
	ms, err := b.Publish(context.Background(), ds)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// rawBatchPart stores events i of a batch of n as a publisher that may
// die half way would: the stored format is Herald-Batch "ID INDEX COUNT",
// chained by message IDs.
func rawBatchPart(t *testing.T, nc *nats.Conn, subject, id string, i, n int, data string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: subject, Data: []byte(data), Header: nats.Header{}}
	m.Header.Set("Herald-Time", fmt.Sprint(time.Now().UnixMicro()))
	m.Header.Set("Herald-Batch", fmt.Sprintf("%s %d %d", id, i, n))
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(fmt.Sprintf("%s.%d", id, i))}
	if i > 0 {
		opts = append(opts, jetstream.WithExpectLastMsgID(fmt.Sprintf("%s.%d", id, i-1)))
	}
	if _, err := js.PublishMsg(context.Background(), m, opts...); err != nil {
		t.Fatalf("failed to store part %d of batch %s: %v", i, id, err)
	}
}

// TestInterruptedBatch: the part of a batch that its publisher left (it
// died, or another message got in) is never delivered nor read, and a
// batch still being written ends the log until it is complete.
func TestInterruptedBatch(t *testing.T) {
	b, nc, name, col := open(t)
	ctx := context.Background()
	subj := natstest.Subjects(name) + ".t"
	publish(t, b, "t", "1")
	// A publisher stores two of three events and dies.
	rawBatchPart(t, nc, subj, "dead", 0, 3, "d0")
	rawBatchPart(t, nc, subj, "dead", 1, 3, "d1")
	bd, err := b.Bounds(ctx)
	if err != nil || bd.Last != 1 {
		t.Fatalf("with a batch pending at the end, Bounds = %+v, %v; want Last 1", bd, err)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 0, Patterns: []hub.Pattern{hub.MustPattern("t")}, Limit: 10})
	if err != nil || datas(res.Messages) != "1" || res.Next != 1 || res.More {
		t.Fatalf("Read with a batch pending = %q next %d more %v, %v; want 1 up to 1", datas(res.Messages), res.Next, res.More, err)
	}
	// Someone else publishes: the dead batch is abandoned, and skipped.
	publish(t, b, "t", "2")
	publish(t, b, "t", "3", "4")
	waitFor(t, "deliveries", func() bool { return len(col.snapshot()) >= 4 })
	if got := datas(col.snapshot()); got != "1,2,3,4" {
		t.Fatalf("delivered %s, want 1,2,3,4", got)
	}
	for _, pats := range [][]hub.Pattern{{hub.MustPattern("t")}, {hub.MustPattern("t"), hub.MustPattern("x")}} {
		res, err = b.Read(ctx, hub.ReadRequest{After: 0, Patterns: pats, Limit: 10})
		if err != nil || datas(res.Messages) != "1,2,3,4" || res.More {
			t.Fatalf("Read %v = %q, %v; want 1,2,3,4", pats, datas(res.Messages), err)
		}
	}
	latest, err := b.Latest(ctx, "t", 10)
	if err != nil || datas(latest) != "1,2,3,4" {
		t.Fatalf("Latest = %q, %v; want 1,2,3,4", datas(latest), err)
	}
	// A batch written slowly is delivered once complete, whole.
	rawBatchPart(t, nc, subj, "slow", 0, 2, "s0")
	bd, _ = b.Bounds(ctx)
	pendingAt := bd.Last
	rawBatchPart(t, nc, subj, "slow", 1, 2, "s1")
	waitFor(t, "the slow batch", func() bool { return len(col.snapshot()) >= 6 })
	if got := datas(col.snapshot()); got != "1,2,3,4,s0,s1" {
		t.Fatalf("delivered %s, want 1,2,3,4,s0,s1", got)
	}
	if bd, _ := b.Bounds(ctx); pendingAt >= bd.Last || bd.Last != col.snapshot()[5].ID.Seq {
		t.Fatalf("Bounds.Last %d while pending, %d when complete; want below, then the batch's end %d", pendingAt, bd.Last, col.snapshot()[5].ID.Seq)
	}
}

// TestStreamLost: a stream deleted under running nodes (NATS lost it) is
// created again as a new log, with a new epoch, and delivery follows it.
func TestStreamLost(t *testing.T) {
	b, nc, name, col := open(t)
	ctx := context.Background()
	old := publish(t, b, "t", "1")
	waitFor(t, "the first delivery", func() bool { return len(col.snapshot()) == 1 })
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	var m []*hub.Message
	waitFor(t, "a publish on the new stream", func() bool {
		ms, err := b.Publish(ctx, []hub.Draft{{Topic: "t", Type: hub.DefaultType, Data: []byte("2")}})
		m = ms
		return err == nil
	})
	if m[0].ID.Epoch == old[0].ID.Epoch || m[0].ID.Seq != 1 {
		t.Fatalf("first event on the new stream is %s; want seq 1 under an epoch other than %s", m[0].ID, old[0].ID.Epoch)
	}
	waitFor(t, "delivery from the new stream", func() bool { return len(col.snapshot()) == 2 })
	if got := col.snapshot()[1]; got.ID != m[0].ID {
		t.Fatalf("delivered %s after the loss, want %s", got.ID, m[0].ID)
	}
	if bd, err := b.Bounds(ctx); err != nil || bd.Epoch != m[0].ID.Epoch || bd.Last != 1 {
		t.Fatalf("Bounds after the loss = %+v, %v", bd, err)
	}
}

// TestPublishAnswerLost: the stream stores a publish whose acknowledgement
// is lost on the way; the broker sends it again, answers with the first
// positions, and the stream holds the events once.
func TestPublishAnswerLost(t *testing.T) {
	nc, name := natstest.Conn(t)
	via := relayed(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{Conn: via.nc, Stream: name, Subjects: natstest.Subjects(name)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	brokertest.RunAnswerLost(t, b, via.rl, streamMsgs(t, nc, name))
}

// TestManyPublishers: 16 publishers per node on two nodes, so that each
// node's sender has many attempts in flight at once, batches among them.
func TestManyPublishers(t *testing.T) {
	brokertest.RunManyPublishers(t, newCluster, 16, 25)
}

// newHeld returns a broker whose sender waits for Release (NewHeld).
func newHeld(t *testing.T, o natsbroker.Options) (*natsbroker.Broker, brokertest.Held) {
	b, start, err := natsbroker.NewHeld(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(start) }
	t.Cleanup(func() {
		release() // Close waits for the sender
		b.Close()
	})
	return b, brokertest.Held{Broker: b, Queued: func() int { return natsbroker.Queued(b) }, Release: release}
}

// TestGroupCancel: a publish cancelled while queued is never sent, and
// leaves no gap among the others.
func TestGroupCancel(t *testing.T) {
	nc, name := conn(t)
	_, h := newHeld(t, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name)})
	brokertest.RunGroupCancel(t, h)
}

// TestGroupDedupe: a dedupe key twice among the queued publishes is
// stored once.
func TestGroupDedupe(t *testing.T) {
	nc, name := conn(t)
	_, h := newHeld(t, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name)})
	brokertest.RunGroupDedupe(t, h)
}

// TestGroupAnswerLost: the acknowledgements of publishes sent together
// are lost; each is sent again with its message IDs, and every publisher
// gets the positions the stream first gave its events.
func TestGroupAnswerLost(t *testing.T) {
	nc, name := natstest.Conn(t)
	via := relayed(t)
	_, h := newHeld(t, natsbroker.Options{Conn: via.nc, Stream: name, Subjects: natstest.Subjects(name)})
	brokertest.RunGroupAnswerLost(t, h, via.rl, streamMsgs(t, nc, name))
}

// relayConn is a connection to NATS through a relay that can lose its
// answers.
type relayConn struct {
	nc *nats.Conn
	rl *relay.Relay
}

func relayed(t *testing.T) relayConn {
	t.Helper()
	rl := relay.Start(t, strings.TrimPrefix(natstest.URL(), "nats://"), relay.Options{})
	via, err := nats.Connect("nats://"+rl.Addr(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(via.Close)
	return relayConn{nc: via, rl: rl}
}

// streamMsgs returns a count of the messages in stream name, read on nc.
func streamMsgs(t *testing.T, nc *nats.Conn, name string) func() int {
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return int(info.State.Msgs)
	}
}

// TestPipelineBound: past the bound of what a node has accepted (10,000
// events, or 8 MiB) a publish waits for room; one whose time runs out
// meanwhile fails as not stored, and the others are stored, each batch
// whole, once the sender runs.
func TestPipelineBound(t *testing.T) {
	t.Run("events", func(t *testing.T) { testPipelineBound(t, 10, 1000, 1) })
	t.Run("bytes", func(t *testing.T) { testPipelineBound(t, 8, 100, 10<<10) })
}

func testPipelineBound(t *testing.T, batches, perBatch, size int) {
	nc, name := conn(t)
	_, h := newHeld(t, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 20000})
	brokertest.RunQueueBound(t, h, batches, perBatch, size, streamMsgs(t, nc, name))
}

// TestCloseFailsQueued: closing a node fails the publishes waiting for
// its sender with hub.ErrClosed, and they are never stored.
func TestCloseFailsQueued(t *testing.T) {
	nc, name := conn(t)
	b, h := newHeld(t, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name)})
	done := make(chan error, 1)
	go func() {
		_, err := b.Publish(context.Background(), []hub.Draft{{Topic: "t", Type: hub.DefaultType, Data: []byte("1")}})
		done <- err
	}()
	wait.For(t, 10*time.Second, "the publish to be queued", func() bool { return h.Queued() == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrClosed) {
			t.Fatalf("a publish queued when the node closed: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a publish queued when the node closed did not return")
	}
	h.Release() // no effect once closed
	if n := streamMsgs(t, nc, name)(); n != 0 {
		t.Fatalf("the stream holds %d messages, want none", n)
	}
}

// TestPipelineCut: the connection to NATS breaks, twice, while a node's
// publishes are in flight through its sender. Every publish returns; one
// answered with cursors is in the log at them, once and whole; one that
// failed as not stored (not hub.ErrUnconfirmed) is not in the log; one
// unconfirmed is in it whole or not at all; no event is stored twice.
func TestPipelineCut(t *testing.T) {
	nc, name := conn(t)
	rl := relay.Start(t, strings.TrimPrefix(natstest.URL(), "nats://"), relay.Options{})
	via, err := nats.Connect("nats://"+rl.Addr(), nats.ReconnectBufSize(-1), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(via.Close)
	ctx := context.Background()
	b, err := natsbroker.New(ctx, natsbroker.Options{Conn: via, Stream: name, Subjects: natstest.Subjects(name), Size: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	type result struct {
		drafts []hub.Draft
		msgs   []*hub.Message
		err    error
	}
	const publishers, rounds = 8, 150
	results := make([][]result, publishers)
	var done sync.WaitGroup
	var answered atomic.Int64
	for p := range publishers {
		done.Add(1)
		go func() {
			defer done.Done()
			for r := range rounds {
				var ds []hub.Draft
				for i := range 1 + (p+r)%3 {
					d := hub.Draft{Topic: fmt.Sprintf("cut.%d", p), Data: []byte(fmt.Sprintf(`"%d-%d-%d"`, p, r, i))}
					if err := d.Normalize(); err != nil {
						panic(err)
					}
					ds = append(ds, d)
				}
				msgs, err := b.Publish(ctx, ds)
				results[p] = append(results[p], result{ds, msgs, err})
				answered.Add(1)
			}
		}()
	}
	for i, at := range []int64{publishers * rounds / 4, publishers * rounds / 2} {
		wait.For(t, 60*time.Second, "publishes to be answered", func() bool { return answered.Load() >= at })
		rl.Cut()
		// Publishes fail at once while the connection is down, so the
		// next cut must wait for it to come back, or it cuts nothing.
		wait.For(t, 60*time.Second, "the connection to come back", func() bool { return b.BrokerStats().Reconnects > int64(i) })
	}
	done.Wait()
	if n := b.BrokerStats().Reconnects; n < 2 {
		t.Fatalf("%d reconnects, want one per cut", n)
	}
	// Read the log on a connection of its own.
	reader, err := natsbroker.New(ctx, natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stored := map[string]*hub.Message{} // by data
	for after := uint64(0); ; {
		res, err := reader.Read(ctx, hub.ReadRequest{After: after, Patterns: []hub.Pattern{hub.MustPattern(">")}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Messages {
			if stored[string(m.Data)] != nil {
				t.Fatalf("%s stored twice, at %s and %s", m.Data, stored[string(m.Data)].ID, m.ID)
			}
			stored[string(m.Data)] = m
		}
		if !res.More {
			break
		}
		after = res.Next
	}
	failed := 0
	for p := range results {
		for _, r := range results[p] {
			in := 0
			for _, d := range r.drafts {
				if stored[string(d.Data)] != nil {
					in++
				}
			}
			switch {
			case r.err == nil:
				for i, m := range r.msgs {
					if got := stored[string(r.drafts[i].Data)]; got == nil || got.ID != m.ID || m.ID.Seq != r.msgs[0].ID.Seq+uint64(i) {
						t.Fatalf("%s answered at %s: the log has %v", r.drafts[i].Data, m.ID, got)
					}
				}
			case errors.Is(r.err, hub.ErrUnconfirmed):
				failed++
				if in != 0 && in != len(r.drafts) {
					t.Fatalf("an unconfirmed batch is in the log in part: %d of %d events", in, len(r.drafts))
				}
			case errors.Is(r.err, hub.ErrUnavailable):
				failed++
				if in != 0 {
					t.Fatalf("a publish that failed as not stored (%v) is in the log: %d of %d events", r.err, in, len(r.drafts))
				}
			default:
				t.Fatalf("publish: %v", r.err)
			}
		}
	}
	t.Logf("%d of %d publishes failed across the cuts", failed, publishers*rounds)
}
