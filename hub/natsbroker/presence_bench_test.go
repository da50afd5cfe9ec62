package natsbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
)

// Presence on NATS (docs/benchmarks.md, "Presence"):
//
//	go test -run '^$' -bench 'Presence' -benchtime 20x ./hub/natsbroker/
func benchBroker(b *testing.B) *natsbroker.Broker {
	nc, name := conn(b)
	br, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 100000, Idle: 200 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	return br
}

func BenchmarkPresenceSnapshot(b *testing.B) {
	brokertest.BenchPresenceSnapshot(b, benchBroker(b), 10000)
}

func BenchmarkPresenceFanout(b *testing.B) { brokertest.BenchPresenceFanout(b, benchBroker(b), 1000) }

func BenchmarkPresenceChurn(b *testing.B) {
	brokertest.BenchPresenceChurn(b, benchBroker(b), 1000, *brokertest.ChurnFor, 200)
}

// BenchmarkPresenceSnapshotCold reads the members of a topic of 10,000
// that this node does not keep: from the presence stream and the log.
func BenchmarkPresenceSnapshotCold(b *testing.B) {
	br := benchBroker(b)
	defer br.Close()
	if err := br.Start(func([]*hub.Message) {}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 10000; i += 500 {
		chs := make([]hub.PresenceChange, 0, 500)
		for j := i; j < i+500; j++ {
			chs = append(chs, hub.PresenceChange{Topic: "big", Client: fmt.Sprintf("bench-%d", j), Join: true,
				Member: []byte(fmt.Sprintf(`{"client":"bench-%d","user":"u%d","info":{"name":"member %d"}}`, j, j%1000, j))})
		}
		if _, err := br.ChangePresence(ctx, chs); err != nil {
			b.Fatal(err)
		}
	}
	var worst time.Duration
	b.ResetTimer()
	for range b.N {
		br.DropPresenceCache()
		start := time.Now()
		p, err := br.Presence(ctx, "big")
		if err != nil || len(p.Members) != 10000 {
			b.Fatalf("%d members, %v", len(p.Members), err)
		}
		worst = max(worst, time.Since(start))
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
}
