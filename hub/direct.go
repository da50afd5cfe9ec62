package hub

import "time"

// DirectWriter is a BatchWriter that can also take a live event from the
// hub's dispatcher. When a connection's writer is idle and nothing is
// queued for it, the dispatcher offers the event to TryWrite rather than
// queueing it and waking the writer: at low rates, where every event is
// alone in its write, waking and scheduling the writer's goroutine costs
// about as much CPU as the write itself (docs/benchmarks.md, "Direct
// writes").
//
// Concurrency: TryWrite is called by the dispatcher holding the client's
// lock, only while the writer is idle (between batches or parked) with
// nothing queued, never concurrently with the BatchWriter's methods or
// Flush, which the same lock orders after it. It must not block: it may
// take a lock of the connection's only by TryLock.
type DirectWriter interface {
	BatchWriter
	// TryWrite writes m as WriteBatch would write it alone, if the
	// socket takes it at once. It reports written false, having written
	// nothing, when it cannot (a full send buffer, a frame it leaves to
	// WriteBatch, a write of the connection's in progress): the hub then
	// queues m as usual. When the socket took only part of the frame,
	// TryWrite keeps the rest, which goes out before anything else the
	// connection writes, and reports rest: the writer then calls Flush.
	// A connection the hub ends meanwhile gets no Flush, only Finish: a
	// graceful close must send the rest first, so that no stream ends
	// inside an event.
	TryWrite(m *Message) (written, rest bool)
	// Flush writes what TryWrite kept, within the write timeout. It is
	// called by the writer.
	Flush() error
}

// A dispatcher that writes to sockets itself is one goroutine per shard
// doing what the connections' writers would do on every core, and it makes
// one write per event where a writer that is behind sends everything
// queued in one: under load, direct writes would cost the coalescing that
// lets a node deliver a million events a second. So a shard writes
// directly only a batch of one event with nothing behind it, and stops for
// a while when its dispatching has kept it busy for more than three
// quarters of a window. Below that, writing directly costs less CPU than
// waking the writers, and the dispatcher keeps up; half was too little on a
// machine whose cores are shared (a dispatcher that waits for a core is
// busy by the clock), and turned direct writes off where they paid.
const (
	directWindow   = 100 * time.Millisecond // how often a shard judges its load
	directPauseMin = time.Second            // the first pause after a busy window
	directPauseMax = 16 * time.Second       // pauses double while trying again finds the shard busy
)

// directGate is a shard's choice between writing events to idle
// connections itself and leaving them to the writers. It is the
// dispatcher's own.
type directGate struct {
	never  bool          // Options.NoDirectWrites
	window time.Time     // start of the current window
	busy   time.Duration // time spent dispatching in it
	tried  bool          // direct writes were allowed in it
	failed bool          // the last window with direct writes was busy
	until  time.Time     // direct writes are off until then
	pause  time.Duration // how long they stay off after a busy window
}

// allow reports whether the dispatch of msgs (waiting: how many batches are
// queued behind them) may write to idle connections directly.
func (g *directGate) allow(msgs, waiting int, now time.Time) bool {
	if g.never || msgs != 1 || waiting > 0 || now.Before(g.until) {
		return false
	}
	g.tried = true
	return true
}

// account counts a dispatch that ran from start to now, and judges the
// window when it is over. A busy window turns direct writes off for the
// pause, from its end (and so for as long as the shard stays busy); the
// pause doubles each time direct writes, tried again, find the shard
// busy again, and is the least again after a whole calm window of them.
func (g *directGate) account(start, now time.Time) {
	g.busy += now.Sub(start)
	span := now.Sub(g.window)
	if span < directWindow {
		return
	}
	if g.pause == 0 {
		g.pause = directPauseMin
	}
	switch {
	case 4*g.busy > 3*span:
		if g.tried {
			if g.failed {
				g.pause = min(2*g.pause, directPauseMax)
			}
			g.failed = true
		}
		g.until = now.Add(g.pause)
	case g.tried && !g.until.After(g.window):
		// Calm with direct writes on for the whole window.
		g.pause, g.failed = directPauseMin, false
	}
	g.window, g.busy, g.tried = now, 0, false
}

// mayWriteDirectLocked reports whether the dispatcher may write to the
// connection itself: its writer takes direct writes and is idle, no rest of
// an earlier one waits for Flush, nothing is queued that would have to go
// first, and no shaping asks for the writer. Small enough to be inlined in
// deliverLive, where most deliveries stop. c.mu is held on entry.
func (c *Client) mayWriteDirectLocked() bool {
	return c.direct && !c.writing && !c.flush && len(c.queue) == 0 && c.shape == nil
}

// writeDirectLocked offers m to the connection's DirectWriter, once
// mayWriteDirectLocked has said yes, and reports whether it was written.
// c.mu is held on entry.
func (c *Client) writeDirectLocked(m *Message) bool {
	written, rest := c.w.bw.(DirectWriter).TryWrite(m)
	if !written {
		return false
	}
	if rest {
		c.flush = true
		c.wakeLocked()
	}
	c.observeWrite(m)
	if o := c.w.opts; o.WritesKeepAlive && c.w.keepAlive != nil {
		c.w.keepAlive.Reset(o.KeepAlive)
	}
	return true
}
