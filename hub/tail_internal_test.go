package hub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// tailLog is a memory broker whose deliveries feed a tail, as Hub.deliver
// does; the broker's Read is what the tail's read must agree with.
type tailLog struct {
	b     *MemoryBroker
	t     *tail
	drop  bool // deliveries are lost while set, as a node behind retention loses them
	after uint64
}

func newTailLog(t *testing.T, maxBytes int64, maxEvents int) *tailLog {
	l := &tailLog{b: NewMemoryBroker(MemoryOptions{Size: 100_000}), t: newTail(maxBytes, maxEvents)}
	if err := l.b.Start(func(msgs []*Message) {
		if l.drop {
			l.after = msgs[len(msgs)-1].seq
			return
		}
		if l.after != 0 {
			l.t.skip(msgs[0].seq)
			l.after = 0
		}
		l.t.append(msgs)
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

var tailTopics = []string{"a.x", "a.y", "b.x", "b.y.z", "c"}

// publish appends n events in batches of 1 to 7, on random topics.
func (l *tailLog) publish(t *testing.T, r *rand.Rand, n int) {
	for n > 0 {
		k := min(n, 1+r.IntN(7))
		drafts := make([]Draft, k)
		for i := range drafts {
			drafts[i] = Draft{Topic: tailTopics[r.IntN(len(tailTopics))], Data: []byte(fmt.Sprintf(`{"n":%d}`, r.IntN(1000)))}
		}
		if _, err := l.b.Publish(context.Background(), drafts); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

var tailPatterns = [][]string{{">"}, {"a.*"}, {"b.>"}, {"c"}, {"a.x", "b.y.z"}, {"nothing"}}

// check compares the tail's answers with the broker's for random
// requests, and reports how many the tail could answer.
func (l *tailLog) check(t *testing.T, r *rand.Rand, rounds int) (answered int) {
	t.Helper()
	b, _ := l.b.Bounds(context.Background())
	for range rounds {
		ps := tailPatterns[r.IntN(len(tailPatterns))]
		req := ReadRequest{After: uint64(r.IntN(int(b.Last) + 3)), Limit: 1 + r.IntN(40)}
		if r.IntN(2) == 0 {
			req.MaxScan = 1 + r.IntN(60)
		}
		for _, p := range ps {
			req.Patterns = append(req.Patterns, MustPattern(p))
		}
		got, ok := l.t.read(req)
		l.t.mu.RLock()
		lo, hi, valid := l.t.lo, l.t.hi, l.t.valid
		l.t.mu.RUnlock()
		if ok != (valid && req.After >= lo) {
			t.Fatalf("read after %d (tail (%d, %d]): ok %v", req.After, lo, hi, ok)
		}
		if !ok {
			continue
		}
		answered++
		want, err := l.b.Read(context.Background(), req)
		if err != nil {
			t.Fatalf("broker read after %d: %v", req.After, err)
		}
		if req.After > b.Last {
			// Past the log's end: nothing, and the position stays.
			want = ReadResult{Next: req.After}
		}
		if !slices.Equal(seqsOf(got.Messages), seqsOf(want.Messages)) || got.Next != want.Next || got.More != want.More {
			t.Fatalf("read %v after %d limit %d scan %d (tail (%d, %d]):\n got %v next %d more %v\nwant %v next %d more %v",
				ps, req.After, req.Limit, req.MaxScan, lo, hi,
				seqsOf(got.Messages), got.Next, got.More, seqsOf(want.Messages), want.Next, want.More)
		}
	}
	return answered
}

func seqsOf(ms []*Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.seq
	}
	return out
}

// TestTailReadsAsTheBroker: every page the tail answers is the page the
// broker's Read gives (events, Next, More), while the tail drops its
// oldest events by count and by bytes, and after a skip in delivery it
// answers only from where delivery resumed.
func TestTailReadsAsTheBroker(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	one := int64(NewMessage(Event{Topic: "b.y.z", Type: "message", Data: []byte(`{"n":100}`)}).retainedSize())
	for _, tc := range []struct {
		name      string
		maxBytes  int64
		maxEvents int
		answers   int // at least, of the 1,500 random reads
	}{
		{"unbounded", 1 << 30, 1 << 20, 1000},
		{"by count", 1 << 30, 50, 100},
		{"by bytes", 37 * one, 1 << 20, 100},
		{"one event", 1 << 30, 1, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTailLog(t, tc.maxBytes, tc.maxEvents)
			if n := l.check(t, r, 50); n != 0 {
				t.Fatalf("an empty tail answered %d reads", n)
			}
			answered := 0
			for range 20 {
				l.publish(t, r, 1+r.IntN(40))
				answered += l.check(t, r, 50)
			}
			// A gap in delivery: the tail holds only what follows it.
			l.drop = true
			l.publish(t, r, 30)
			l.drop = false
			l.publish(t, r, 1+r.IntN(10))
			l.t.mu.RLock()
			lo := l.t.lo
			l.t.mu.RUnlock()
			b, _ := l.b.Bounds(context.Background())
			if lo < b.Last-10 {
				t.Fatalf("after a skip the tail starts at %d, before the events delivered after it (log end %d)", lo, b.Last)
			}
			for range 10 {
				l.publish(t, r, 1+r.IntN(40))
				answered += l.check(t, r, 50)
			}
			if answered < tc.answers {
				t.Fatalf("the tail answered only %d reads", answered)
			}
		})
	}
}

// TestTailSkips: a broker may report skips while it still holds events
// from before them, and several before it delivers again; the tail holds
// nothing across any of them.
func TestTailSkips(t *testing.T) {
	tl := newTail(1<<20, 1000)
	mk := func(from, to uint64) []*Message {
		var ms []*Message
		for s := from; s <= to; s++ {
			ms = append(ms, NewMessage(Event{ID: Cursor{Epoch: "e", Seq: s}, Topic: "t", Type: "message", Data: []byte("1")}))
		}
		return ms
	}
	read := func(after uint64) (ReadResult, bool) {
		return tl.read(ReadRequest{After: after, Patterns: []Pattern{MustPattern("t")}, Limit: 1000})
	}
	tl.append(mk(100, 201))
	tl.skip(382) // reported while 202-301 are still held
	tl.skip(500) // and another before they are delivered
	tl.append(mk(202, 301))
	tl.append(mk(382, 399))
	for _, after := range []uint64{150, 301, 390} {
		if res, ok := read(after); ok {
			t.Fatalf("read after %d across skips: %v", after, seqsOf(res.Messages))
		}
	}
	tl.append(mk(500, 510))
	if _, ok := read(498); ok {
		t.Fatal("the tail answered for a position before where delivery resumed")
	}
	res, ok := read(499)
	if !ok || len(res.Messages) != 11 || res.Messages[0].seq != 500 || res.Next != 510 {
		t.Fatalf("read after 499: %v next %d ok %v, want 500-510", seqsOf(res.Messages), res.Next, ok)
	}
}

// TestTailNewLog: a new log (epoch) empties the tail; it starts again
// with the new log's first delivered batch.
func TestTailNewLog(t *testing.T) {
	tl := newTail(1<<20, 100)
	mk := func(seq uint64) *Message {
		return NewMessage(Event{ID: Cursor{Epoch: "e", Seq: seq}, Topic: "t", Type: "message", Data: []byte("1")})
	}
	tl.append([]*Message{mk(5), mk(6), mk(7)})
	if res, ok := tl.read(ReadRequest{After: 4, Patterns: []Pattern{MustPattern("t")}, Limit: 10}); !ok || len(res.Messages) != 3 {
		t.Fatalf("read after 4: %v %v, want 3 events", seqsOf(res.Messages), ok)
	}
	tl.reset()
	if _, ok := tl.read(ReadRequest{After: 4, Patterns: []Pattern{MustPattern("t")}, Limit: 10}); ok {
		t.Fatal("a reset tail answered")
	}
	tl.append([]*Message{mk(2), mk(3)})
	res, ok := tl.read(ReadRequest{After: 1, Patterns: []Pattern{MustPattern("t")}, Limit: 10})
	if !ok || !slices.Equal(seqsOf(res.Messages), []uint64{2, 3}) || res.Next != 3 || res.More {
		t.Fatalf("read after 1 of the new log: %v next %d more %v ok %v", seqsOf(res.Messages), res.Next, res.More, ok)
	}
	if _, ok := tl.read(ReadRequest{After: 0, Patterns: []Pattern{MustPattern("t")}, Limit: 10}); ok {
		t.Fatal("the tail answered for a position before its first delivered event")
	}
}

// BenchmarkTailAppend is what the tail adds to delivery, per event, once
// full (each append drops the oldest).
func BenchmarkTailAppend(b *testing.B) {
	const batch = 64
	msgs := make([]*Message, batch)
	tl := newTail(DefaultTailBytes, 10_000)
	seq := uint64(0)
	data := []byte(`{"order":42,"status":"paid","items":[1,2,3]}`)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer() // the messages are the broker's, not the tail's
		for i := range msgs {
			seq++
			msgs[i] = NewMessage(Event{ID: Cursor{Epoch: "e", Seq: seq}, Topic: "bench.t", Type: "message", Data: data})
		}
		b.StartTimer()
		tl.append(msgs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
}
