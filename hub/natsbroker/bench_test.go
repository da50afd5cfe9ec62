package natsbroker_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkPublish measures Publish of one event per call on a started
// broker (delivery running), with and without a key, from one goroutine
// (seq: the latency of a publish) and from 16 (par: throughput). Keyed
// events go to 64 keys of one topic, so that most writes replace a key;
// unique events each have a key of their own, so that every one is a
// write of the state; churn events set a new key and remove it with the
// next event, so that every key leaves a tombstone.
// Run with
//
//	go test -run '^$' -bench Publish -benchtime 2000x -count 3 ./hub/natsbroker/
func BenchmarkPublish(b *testing.B) {
	for _, par := range []bool{false, true} {
		for _, keys := range []int{0, 64, -1, -2} {
			name := map[bool]string{false: "seq", true: "par"}[par] + "/" + map[int]string{0: "plain", 64: "keyed", -1: "unique", -2: "churn"}[keys]
			b.Run(name, func(b *testing.B) { benchPublish(b, par, keys) })
		}
	}
}

// benchPublish publishes with no key (keys 0), with one of keys keys,
// with a new key each time (keys -1), or setting a new key and removing it
// in turn (keys -2).
func benchPublish(b *testing.B, par bool, keys int) {
	br, _, _, _ := open(b)
	ctx := context.Background()
	d := hub.Draft{Topic: "bench.t", Data: []byte(`{"n":1}`)}
	if err := d.Normalize(); err != nil {
		b.Fatal(err)
	}
	key := func(i int64) string {
		if keys == -2 {
			return "c" + strconv.FormatInt(i/2, 36)
		}
		if keys < 0 {
			return "u" + strconv.FormatInt(i, 36)
		}
		return "k" + strconv.FormatInt(i%int64(keys), 10)
	}
	b.ResetTimer()
	if !par {
		for i := 0; i < b.N; i++ {
			if keys != 0 {
				d.Key = key(int64(i))
			}
			if keys == -2 && i%2 == 1 {
				d.Data = []byte("null")
			} else {
				d.Data = []byte(`{"n":1}`)
			}
			if _, err := br.Publish(ctx, []hub.Draft{d}); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var n atomic.Int64
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		d := d
		for pb.Next() {
			i := n.Add(1)
			if keys != 0 {
				d.Key = key(i)
			}
			if keys == -2 && i%2 == 1 {
				d.Data = []byte("null")
			} else {
				d.Data = []byte(`{"n":1}`)
			}
			if _, err := br.Publish(ctx, []hub.Draft{d}); err != nil {
				panic(err)
			}
		}
	})
}

// BenchmarkState measures a snapshot of a topic of 64 keys: idle, when
// the applier has written them all, and busy, while 16 goroutines publish
// to the topic (each snapshot then also reads the log's events that the
// applier holds).
func BenchmarkState(b *testing.B) {
	for _, busy := range []bool{false, true} {
		b.Run(map[bool]string{false: "idle", true: "busy"}[busy], func(b *testing.B) {
			br, _, _, _ := open(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			d := hub.Draft{Topic: "bench.t", Data: []byte(`{"n":1}`)}
			if err := d.Normalize(); err != nil {
				b.Fatal(err)
			}
			for i := range 64 {
				d.Key = "k" + strconv.Itoa(i)
				if _, err := br.Publish(ctx, []hub.Draft{d}); err != nil {
					b.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			if busy {
				for g := range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						d := d
						for i := 0; ctx.Err() == nil; i++ {
							d.Key = "k" + strconv.Itoa((i*16+g)%64)
							_, _ = br.Publish(ctx, []hub.Draft{d})
						}
					}()
				}
			}
			benchTopic, err := hub.ParsePattern("bench.t")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st, err := br.State(ctx, []hub.Pattern{benchTopic})
				if err != nil || len(st.Events) != 64 {
					b.Fatalf("state: %d events, %v", len(st.Events), err)
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}
