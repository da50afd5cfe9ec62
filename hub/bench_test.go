package hub

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Benchmarks of the hub's hot paths. Run them with
//
//	go test -run '^$' -bench . -benchmem -count 3 ./hub/
//
// Results and the machine they were taken on are in docs/benchmarks.md.

// BenchmarkFanout measures the live path: Publish, the broker, every
// shard's dispatcher matching its clients and appending to their queues,
// and writers draining the queues. One op is one published event, delivered
// to every subscriber. Writers are reduced to one goroutine per shard that
// drains all of the shard's clients (a transport writes to sockets there;
// that cost is measured end to end, not here). Publishing and draining
// alternate in rounds so queues stay far below their bound.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1000, 8000} {
		for _, kind := range []string{"exact", "wildcard"} {
			b.Run(fmt.Sprintf("subs=%d/%s", subs, kind), func(b *testing.B) {
				benchFanout(b, subs, kind)
			})
		}
	}
}

// fanoutRound is how many events are published between drains.
const fanoutRound = 64

func benchFanout(b *testing.B, subs int, kind string) {
	ctx := context.Background()
	h, err := New(Options{QueueBytes: 1 << 20, Broker: NewMemoryBroker(MemoryOptions{Size: 4096})})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := h.Close(ctx); err != nil {
			b.Error(err)
		}
	}()
	pattern := MustPattern("bench.t")
	if kind == "wildcard" {
		pattern = MustPattern("bench.*")
	}
	type shardWriter struct {
		clients []*Client
		bufs    [][]Item
		got     int64
	}
	writers := map[*shard]*shardWriter{}
	for range subs {
		c, err := h.NewClient("bench")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe(SubscribeRequest{Patterns: []Pattern{pattern}}); err != nil {
			b.Fatal(err)
		}
		w := writers[c.shardOf()]
		if w == nil {
			w = &shardWriter{}
			writers[c.shardOf()] = w
		}
		w.clients = append(w.clients, c)
		w.bufs = append(w.bufs, nil)
	}
	// One writer goroutine per shard, told to drain once per round.
	drain := make(chan struct{})
	var round sync.WaitGroup
	var stopped sync.WaitGroup
	for _, w := range writers {
		stopped.Add(1)
		go func() {
			defer stopped.Done()
			for range drain {
				for i, c := range w.clients {
					items, _, _, _, err := c.drain(w.bufs[i])
					if err != nil {
						panic(fmt.Sprintf("client failed: %v", err))
					}
					w.got += int64(len(items))
					w.bufs[i] = items
				}
				round.Done()
			}
		}()
	}
	defer func() { close(drain); stopped.Wait() }()
	drafts := make([]Draft, 1)
	runRound := func(n int) {
		var last uint64
		for i := range n {
			drafts[0] = Draft{Topic: "bench.t", Data: []byte(`{"n":` + strconv.Itoa(i) + `}`)}
			msgs, err := h.Publish(ctx, drafts...)
			if err != nil {
				b.Fatal(err)
			}
			last = msgs[0].seq
		}
		for _, s := range h.shards {
			for s.dispatched.Load() < last {
				runtime.Gosched()
			}
		}
		round.Add(len(writers))
		for range writers {
			drain <- struct{}{}
		}
		round.Wait()
	}
	// Warm up: a client's queue and its writer's buffer swap at every drain,
	// so two rounds bring both slices to their working size.
	runRound(fanoutRound)
	runRound(fanoutRound)
	for _, w := range writers {
		w.got = 0
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; done += fanoutRound {
		runRound(min(fanoutRound, b.N-done))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	var got int64
	for _, w := range writers {
		got += w.got
	}
	want := int64(b.N) * int64(subs)
	if got != want {
		b.Fatalf("delivered %d, want %d", got, want)
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(got), "allocs/delivery")
}

// BenchmarkMatch measures index.match, the dispatcher's lookup, with n
// subscriptions: sparse (one of n patterns matches) and fan-out (all n
// clients match), for literal and wildcard patterns.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{100, 10000} {
		cases := []struct {
			name    string
			pattern func(i int) string
			topic   string
			want    int
		}{
			{"exact-sparse", func(i int) string { return "m." + strconv.Itoa(i) }, "m." + strconv.Itoa(n/2), 1},
			{"exact-fanout", func(int) string { return "m.t" }, "m.t", n},
			{"wild-sparse", func(i int) string { return "m." + strconv.Itoa(i) + ".*" }, "m." + strconv.Itoa(n/2) + ".x", 1},
			{"wild-fanout", func(int) string { return "m.*" }, "m.t", n},
			{"gt-fanout", func(int) string { return "m.>" }, "m.t.u", n},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("n=%d/%s", n, c.name), func(b *testing.B) {
				x := newIndex()
				for i := range n {
					x.add(MustPattern(c.pattern(i)), &Client{id: uint64(i)})
				}
				dst := make([]*Client, 0, n)
				if got := len(x.match(c.topic, dst)); got != c.want {
					b.Fatalf("match = %d clients, want %d", got, c.want)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					dst = x.match(c.topic, dst[:0])
				}
			})
		}
	}
}

// BenchmarkPublish measures Publish with no subscribers: validation,
// compaction, the memory broker's ring and the hand-off to the shards.
func BenchmarkPublish(b *testing.B) {
	// The keyed runs cycle through 16 keys, so that the memory broker's
	// state replaces entries rather than grows.
	for _, keyed := range []bool{false, true} {
		for _, batch := range []int{1, 10} {
			name := fmt.Sprintf("batch=%d", batch)
			if keyed {
				name += ",keyed"
			}
			b.Run(name, func(b *testing.B) { benchPublish(b, batch, keyed) })
		}
	}
}

func benchPublish(b *testing.B, batch int, keyed bool) {
	ctx := context.Background()
	h := benchHub(b, Options{})
	drafts := make([]Draft, batch)
	data := []byte(`{"order":42,"status":"paid","items":[1,2,3]}`)
	var keys [16]string
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	events := 0
	for b.Loop() {
		for i := range drafts {
			drafts[i] = Draft{Topic: "orders.42", Type: "order.paid", Data: data}
			if keyed {
				drafts[i].Key = keys[(events+i)%len(keys)]
			}
		}
		if _, err := h.Publish(ctx, drafts...); err != nil {
			b.Fatal(err)
		}
		events += batch
	}
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkEncode measures the envelope encoding done once per event.
func BenchmarkEncode(b *testing.B) {
	ev := Event{
		ID:    Cursor{Epoch: NewEpoch(), Seq: 123456789},
		Topic: "orders.42",
		Type:  "order.paid",
		Data:  []byte(`{"order":42,"status":"paid","items":[1,2,3]}`),
		Time:  time.Date(2026, 11, 21, 12, 0, 0, 123456789, time.UTC),
	}
	buf := ev.AppendJSON(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = ev.AppendJSON(buf[:0])
	}
}

// BenchmarkSubscribe measures a connection's subscription on a hub with a
// retained log: NewClient, Subscribe and Close. rewind=0 is the ordinary
// subscribe, which must not pay for rewinds; rewind=10 adds the backward
// look and the replay of ten events, waited for (drained) before Close.
func BenchmarkSubscribe(b *testing.B) {
	for _, rewind := range []int{0, 10} {
		b.Run(fmt.Sprintf("rewind=%d", rewind), func(b *testing.B) {
			ctx := context.Background()
			h := benchHub(b, Options{})
			for i := range 1000 {
				if _, err := h.Publish(ctx, Draft{Topic: "bench." + strconv.Itoa(i%4), Data: []byte("1")}); err != nil {
					b.Fatal(err)
				}
			}
			req := SubscribeRequest{Patterns: []Pattern{MustPattern("bench.*")}, Rewind: rewind}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := h.NewClient("bench")
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Subscribe(req); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < rewind; {
					select {
					case <-c.wake:
					case <-time.After(10 * time.Second):
						b.Fatalf("rewound %d of %d events", got, rewind)
					}
					items, _, _, _, _ := c.drain(nil)
					got += len(items)
				}
				c.Close()
			}
		})
	}
}

// benchHub starts a hub that the benchmark's end closes.
func benchHub(b *testing.B, o Options) *Hub {
	h, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return h
}
