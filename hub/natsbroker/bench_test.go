package natsbroker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkPublish measures Publish of one event per call on a started
// broker (delivery running), with and without a key, from one goroutine
// (seq: the latency of a publish) and from 16 (par: throughput). Keyed
// events go to 64 keys of one topic, so that most writes replace a key.
// Run with
//
//	go test -run '^$' -bench Publish -benchtime 2000x -count 3 ./hub/natsbroker/
func BenchmarkPublish(b *testing.B) {
	for _, par := range []bool{false, true} {
		for _, keyed := range []bool{false, true} {
			name := map[bool]string{false: "seq", true: "par"}[par] + "/" + map[bool]string{false: "plain", true: "keyed"}[keyed]
			b.Run(name, func(b *testing.B) { benchPublish(b, par, keyed) })
		}
	}
}

func benchPublish(b *testing.B, par, keyed bool) {
	{
		{
			br, _, _, _ := open(b)
			ctx := context.Background()
			d := hub.Draft{Topic: "bench.t", Data: []byte(`{"n":1}`)}
			if err := d.Normalize(); err != nil {
				b.Fatal(err)
			}
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("k%d", i)
			}
			b.ResetTimer()
			if !par {
				for i := 0; i < b.N; i++ {
					if keyed {
						d.Key = keys[i%len(keys)]
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
					if keyed {
						d.Key = keys[n.Add(1)%int64(len(keys))]
					}
					if _, err := br.Publish(ctx, []hub.Draft{d}); err != nil {
						panic(err)
					}
				}
			})
		}
	}
}
