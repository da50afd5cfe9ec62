package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
)

// readPair is a stream written by one node and read by another whose
// connection goes through a relay, so that the reader's JetStream can be
// made silent while its connection stays up.
type readPair struct {
	writer, reader *natsbroker.Broker
	via            relayConn
}

func newReadPair(t *testing.T, size int) readPair {
	t.Helper()
	nc, name := conn(t)
	via := relayed(t)
	var p readPair
	p.via = via
	for _, c := range []struct {
		b    **natsbroker.Broker
		conn relayConn
	}{{&p.writer, relayConn{nc: nc}}, {&p.reader, via}} {
		b, err := natsbroker.New(context.Background(), natsbroker.Options{
			Conn: c.conn.nc, Stream: name, Subjects: natstest.Subjects(name), Size: size,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		*c.b = b
	}
	return p
}

// fill publishes n events, their topics taking turns among topics.
func (p readPair) fill(t *testing.T, n int, topics ...string) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		var ds []hub.Draft
		for j := i; j < min(n, i+100); j++ {
			d := hub.Draft{Topic: topics[j%len(topics)], Data: []byte(fmt.Sprintf(`"%d"`, j))}
			if err := d.Normalize(); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		if _, err := p.writer.Publish(context.Background(), ds); err != nil {
			t.Fatal(err)
		}
	}
}

func patterns(ps ...string) []hub.Pattern {
	var out []hub.Pattern
	for _, p := range ps {
		out = append(out, hub.MustPattern(p))
	}
	return out
}

// readCases are a read filtered on the server (one pattern) and one that
// reads every event and filters here (two).
var readCases = []struct {
	name     string
	patterns []hub.Pattern
}{
	{"filtered", patterns("t")},
	{"all", patterns("t", "u")},
}

// TestReadStalled: JetStream stops answering after a history read has
// opened (its stream's state read, its consumer created) and before the
// read's first fetch. The read fails as unavailable, within a few seconds,
// instead of answering that the history ends there: nats.go ends a fetch
// that got no answer as one that found nothing.
func TestReadStalled(t *testing.T) {
	for _, c := range readCases {
		t.Run(c.name, func(t *testing.T) {
			p := newReadPair(t, 0)
			p.fill(t, 20, "t", "u")
			var fetches atomic.Int64
			natsbroker.OnRead(t, p.reader, func(stage string) {
				if stage == "fetch" && fetches.Add(1) == 1 {
					p.via.rl.Mute()
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			res, err := p.reader.Read(ctx, hub.ReadRequest{Patterns: c.patterns, Limit: 100})
			took := time.Since(start)
			p.via.rl.Unmute()
			if !errors.Is(err, hub.ErrUnavailable) {
				t.Fatalf("read with JetStream silent: %d events, next %d, more %v, error %v; want ErrUnavailable",
					len(res.Messages), res.Next, res.More, err)
			}
			if took > 10*time.Second {
				t.Fatalf("the read failed after %v", took)
			}
			t.Logf("failed after %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestReadLostDeliveries: the answer to one of a read's fetches is lost,
// while later requests are answered. The consumer counts those messages
// as delivered and goes on after them; the read fails as unavailable
// rather than skip them, whether more events come after them (gap) or
// none (tail).
func TestReadLostDeliveries(t *testing.T) {
	for _, size := range []struct {
		name string
		n    int
	}{{"gap", 1200}, {"tail", 600}} {
		for _, c := range readCases {
			t.Run(size.name+"/"+c.name, func(t *testing.T) {
				p := newReadPair(t, 0)
				p.fill(t, size.n, "t", "u") // in pages of 256, the second lost
				var fetches atomic.Int64
				var muted atomic.Bool
				natsbroker.OnRead(t, p.reader, func(stage string) {
					switch {
					case stage == "fetch" && fetches.Add(1) == 2:
						muted.Store(true)
						p.via.rl.Mute()
					case muted.Load():
						muted.Store(false)
						p.via.rl.Unmute()
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				res, err := p.reader.Read(ctx, hub.ReadRequest{Patterns: c.patterns, Limit: 2000})
				p.via.rl.Unmute()
				if !errors.Is(err, hub.ErrUnavailable) {
					t.Fatalf("read with a fetch's answer lost: %d events, next %d, more %v, error %v; want ErrUnavailable",
						len(res.Messages), res.Next, res.More, err)
				}
				t.Logf("%v", err)
			})
		}
	}
}

// TestReadGoneMeanwhile: retention removes the events a read was about to
// fetch, after it opened. The read ends without them and without an error:
// they are gone, which the stream confirms.
func TestReadGoneMeanwhile(t *testing.T) {
	for _, c := range readCases {
		t.Run(c.name, func(t *testing.T) {
			p := newReadPair(t, 10)
			p.fill(t, 5, "t")
			var fetches atomic.Int64
			natsbroker.OnRead(t, p.reader, func(stage string) {
				if stage == "fetch" && fetches.Add(1) == 1 {
					p.fill(t, 20, "v") // pushes every event of t out
				}
			})
			res, err := p.reader.Read(context.Background(), hub.ReadRequest{Patterns: c.patterns, Limit: 100})
			if err != nil || len(res.Messages) != 0 || res.More || res.Next < 5 {
				t.Fatalf("read of events gone meanwhile: %d events, next %d, more %v, error %v; want none, next 5 or more, no error",
					len(res.Messages), res.Next, res.More, err)
			}
		})
	}
}

// TestReadSparse: a topic's events among many of another topic are read
// whole, and with no check of what the stream holds: a read that meets no
// failure costs nothing more.
func TestReadSparse(t *testing.T) {
	for _, c := range readCases {
		t.Run(c.name, func(t *testing.T) {
			p := newReadPair(t, 0)
			p.fill(t, 1000, "t", "v", "v", "v", "v", "v", "v", "v", "v", "v") // t at 1, 11, 21, ...
			p.fill(t, 300, "v")
			var held atomic.Int64
			natsbroker.OnRead(t, p.reader, func(stage string) {
				if stage == "held" {
					held.Add(1)
				}
			})
			var got []*hub.Message
			for after := uint64(0); ; {
				res, err := p.reader.Read(context.Background(), hub.ReadRequest{After: after, Patterns: c.patterns, Limit: 30})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, res.Messages...)
				if !res.More {
					if res.Next != 1300 {
						t.Fatalf("the read ended at %d, want 1300", res.Next)
					}
					break
				}
				after = res.Next
			}
			if len(got) != 100 {
				t.Fatalf("read %d events of t, want 100", len(got))
			}
			for i, m := range got {
				if m.ID.Seq != uint64(1+10*i) || string(m.Data) != fmt.Sprintf(`"%d"`, 10*i) {
					t.Fatalf("event %d: %s at %d", i, m.Data, m.ID.Seq)
				}
			}
			if n := held.Load(); n != 0 {
				t.Fatalf("%d checks of what the stream holds, want none", n)
			}
		})
	}
}
