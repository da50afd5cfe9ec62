package bench

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Forced disconnects (Config.ChaosDisconnect) check the protocol's resume
// contract under load: a subscriber whose connection is cut reconnects at
// once with its last cursor and must end with every event, in order, once.
// The loss and duplicate accounting needs nothing new for that: it is kept
// per subscriber on the publisher's sequence numbers, across connections,
// so an event missed across a resume is lost and one received twice is a
// duplicate; the cursor order is also kept across connections.

// Bounds of the pause between failed reconnect attempts: short, because a
// resume is what is being measured, and capped, so that a server that is
// gone for good is not hammered.
const (
	resumeBackoffMin = 10 * time.Millisecond
	resumeBackoffMax = time.Second
)

// failoverNode is the node that subscriber idx turns to when node ends
// its connection: one of the other n-1, in turn by idx, so that a dead
// node's subscribers spread evenly over the rest, with both transports
// alike (idx/2 is the pair of a WebSocket and an SSE subscriber). On
// this box no node could take all of a dead node's: a process holds at
// most ~20,000 sockets.
func failoverNode(idx, node, n int) int {
	if n < 2 {
		return node
	}
	return (node + 1 + (idx/2)%(n-1)) % n
}

// hold reads s's connection conn until ctx ends. When the chaos cut the
// connection, it reconnects and resumes from s's last cursor, and reads on.
// With several nodes, a connection its node ended is a failover: s
// resumes from its cursor on another node (failoverNode), which a cluster
// must allow (a cursor names a position in the shared log). Any other end
// of the connection before ctx's is recorded as an error of its kind, and
// ends the subscriber. hold owns s's per-event state.
func (r *run) hold(ctx context.Context, kind string, s *subscriber, src source, conn subConn) {
	for {
		s.attach(conn)
		err := conn.read(ctx)
		cut := s.detach()
		r.connected.Add(-1)
		if ctx.Err() != nil {
			return
		}
		if !cut {
			if r.cfg.nodes() < 2 {
				if err != nil {
					r.failWith(errorKind(err), err)
				}
				return
			}
			s.failovers++
			s.node = failoverNode(s.idx, s.node, r.cfg.nodes())
		}
		if conn = r.resume(ctx, kind, s, src); conn == nil {
			return
		}
	}
}

// attach makes conn the connection the chaos may cut.
func (s *subscriber) attach(conn subConn) {
	s.cutMu.Lock()
	s.conn, s.cut = conn, false
	s.cutMu.Unlock()
}

// detach forgets the connection once it has ended, and reports whether the
// chaos cut it.
func (s *subscriber) detach() (cut bool) {
	s.cutMu.Lock()
	defer s.cutMu.Unlock()
	s.conn = nil
	return s.cut
}

// cutConn closes s's connection from the client side, without a goodbye,
// if s has one open and a cursor to resume from. Safe to call from any
// goroutine.
func (s *subscriber) cutConn() bool {
	if !s.resumable.Load() {
		return false
	}
	s.cutMu.Lock()
	defer s.cutMu.Unlock()
	if s.conn == nil || s.cut {
		return false
	}
	s.cut = true
	s.conn.close()
	return true
}

// resume opens s's connection again, asking for what followed its last
// cursor, and retries until it succeeds or ctx ends (nil then). Failed
// attempts are recorded as errors ("reconnect_…"); with several nodes,
// each failed attempt moves on to the next node. A subscriber that has no
// cursor yet (only a failover can end its connection that early)
// subscribes afresh.
func (r *run) resume(ctx context.Context, kind string, s *subscriber, src source) subConn {
	var since string
	if s.epoch != "" {
		since = s.epoch + "-" + strconv.FormatUint(s.cursor, 10)
	}
	backoff := resumeBackoffMin
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t0 := time.Now()
		conn, err := r.connect(ctx, kind, s, src, since)
		if err == nil {
			r.resumeHist.Lock()
			_ = r.resumeHist.h.RecordValue(max(time.Since(t0).Microseconds(), 1))
			r.resumeHist.Unlock()
			s.reconnects++
			r.connected.Add(1)
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		r.fail("re" + connectErrorKind(err))
		s.node = (s.node + 1) % r.cfg.nodes()
		timer.Reset(backoff)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, resumeBackoffMax)
	}
}

// startChaos cuts cfg.ChaosDisconnect connections per second, each of a
// subscriber drawn at random (seeded with cfg.Seed), until the returned
// stop is called or ctx ends. A subscriber that cannot be cut at that
// moment (reconnecting, or without a cursor yet) is passed over for
// another draw, a few times at most, so the rate holds while the run is
// busy reconnecting. Without a rate, it starts nothing.
func (r *run) startChaos(ctx context.Context) (stop func()) {
	rate := r.cfg.ChaosDisconnect
	if rate <= 0 || len(r.subs) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x6368616f73)) // "chaos": its own stream of the seed
		interval := time.Duration(float64(time.Second) / rate)
		start := time.Now()
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for i := int64(1); ; i++ {
			// Due at fixed offsets, so a late wake-up is made up.
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-done:
					return
				case <-ctx.Done():
					return
				}
			}
			for range 8 {
				if r.subs[rng.IntN(len(r.subs))].cutConn() {
					r.cuts.Add(1)
					break
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}
