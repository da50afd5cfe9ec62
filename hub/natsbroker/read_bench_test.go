package natsbroker_test

import (
	"context"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkRead measures Read on a log of 2,000 events, two topics taking
// turns: a whole topic filtered on the server (topic, 1,000 events in
// pages of 256), both topics read whole and filtered here (patterns), and
// a topic's last 10 events, as a resuming subscriber reads them (recent).
// Run with
//
//	go test -run '^$' -bench Read -benchtime 200x -count 3 ./hub/natsbroker/
func BenchmarkRead(b *testing.B) {
	br := benchBroker(b)
	defer br.Close()
	ctx := context.Background()
	for i := 0; i < 2000; i += 100 {
		ds := make([]hub.Draft, 0, 100)
		for j := i; j < i+100; j++ {
			d := hub.Draft{Topic: []string{"bench.a", "bench.b"}[j%2], Data: []byte(`{"n":1}`)}
			if err := d.Normalize(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, d)
		}
		if _, err := br.Publish(ctx, ds); err != nil {
			b.Fatal(err)
		}
	}
	a, bb := hub.MustPattern("bench.a"), hub.MustPattern("bench.b")
	for _, c := range []struct {
		name string
		req  hub.ReadRequest
		want int
	}{
		{"topic", hub.ReadRequest{Patterns: []hub.Pattern{a}, Limit: 1000}, 1000},
		{"patterns", hub.ReadRequest{Patterns: []hub.Pattern{a, bb}, Limit: 2000}, 2000},
		{"recent", hub.ReadRequest{After: 1980, Patterns: []hub.Pattern{a}, Limit: 100}, 10},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res, err := br.Read(ctx, c.req)
				if err != nil || len(res.Messages) != c.want || res.More {
					b.Fatalf("read: %d events (more %v), %v; want %d", len(res.Messages), res.More, err, c.want)
				}
			}
		})
	}
}
