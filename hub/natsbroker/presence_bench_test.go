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

// BenchmarkPresenceSnapshotFirst reads the members of a topic of 10,000
// on a node started after they joined: the first read of the topic on
// that node, once its load at start is done (load-ms: from Start until
// then, not timed as the read is).
func BenchmarkPresenceSnapshotFirst(b *testing.B) {
	nc, name := conn(b)
	opts := natsbroker.Options{Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 100000, Idle: 200 * time.Millisecond}
	br, err := natsbroker.New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
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
	var worst, load time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		node, err := natsbroker.New(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		started := time.Now()
		if err := node.Start(func([]*hub.Message) {}); err != nil {
			b.Fatal(err)
		}
		natsbroker.WaitPresenceLoad(node)
		load += time.Since(started)
		if !node.PresenceComplete() {
			b.Fatal("the node did not load the members")
		}
		b.StartTimer()
		start := time.Now()
		p, err := node.Presence(ctx, "big")
		if err != nil || len(p.Members) != 10000 {
			b.Fatalf("%d members, %v", len(p.Members), err)
		}
		worst = max(worst, time.Since(start))
		b.StopTimer()
		node.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(load.Microseconds())/1000/float64(b.N), "load-ms")
}
