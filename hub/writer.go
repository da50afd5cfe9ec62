package hub

import (
	"math/rand/v2"
	"time"
)

// BatchWriter is a connection's framing and socket: what a transport gives
// Client.Serve, which runs the connection's one writer and calls these.
//
// Concurrency: the methods are called by the writer only, one call at a time,
// never concurrently with each other; the writer may run on different
// goroutines over time (it parks while idle), each start of one ordered after
// the end of the last by the client's lock, so the methods may use the
// connection's write side and their own fields without locking. They are
// called holding no lock of the hub. WriteBatch and KeepAlive must return
// within the connection's write timeout; an error from either ends the
// connection.
type BatchWriter interface {
	// WriteBatch writes items, in order, as one batch (never empty).
	WriteBatch(items []Item) error
	// KeepAlive is called when WriterOptions.KeepAlive has passed: a
	// heartbeat or a ping is due.
	KeepAlive() error
	// Finish is called exactly once, as the writer's last act, when the
	// connection ends, and says why. It closes the connection, waits for what
	// the transport owns and calls Client.Close.
	Finish(end End)
}

// End says why a connection's writer ended. At most one field is set; none
// means the transport's done channel was closed (Serve).
type End struct {
	Closed error // the hub closed the client (ErrSlowConsumer, ErrClosed, a disconnect)
	Failed error // WriteBatch or KeepAlive failed with it
}

// WriterOptions shape a connection's writer. A transport shares one value
// among its connections; it must not change after the first Serve.
type WriterOptions struct {
	// KeepAlive is how long the writer waits before calling
	// BatchWriter.KeepAlive; zero or negative: never. The first one comes
	// after a random half to whole interval when KeepAliveJitter is set, so
	// connections made together (a reconnect storm) are not all woken
	// together ever after.
	KeepAlive       time.Duration
	KeepAliveJitter bool
	// WritesKeepAlive: every batch written counts as a keep-alive, so one
	// is due only after a full quiet interval (SSE heartbeats). Otherwise
	// keep-alives are periodic (WebSocket pings, which are also how a dead
	// peer is found).
	WritesKeepAlive bool
	// ParkAfter is how long the writer waits for more work before it parks:
	// its goroutine ends and the next wake starts a new one, so an idle
	// connection holds no writer goroutine. An active connection keeps its
	// writer: parking after every batch would cost a goroutine start and a
	// stack regrowth per event. Zero: the writer never parks and Serve runs
	// it on the calling goroutine (a ResponseWriter that must not outlive
	// its handler).
	ParkAfter time.Duration
}

// keepItems is the largest batch slice the writer keeps between batches. A
// burst may grow it much further; keeping that while idle would cost every
// connection that ever saw a burst.
const keepItems = 128

// writer is the state of a served client's writer. Its fields are set by
// Serve and then used by one writer goroutine at a time, except the
// keep-alive timer (safe for concurrent use). Client.parked and
// Client.writes belong with it; they sit among the client's other small
// fields, where they take no room of their own.
type writer struct {
	bw        BatchWriter
	opts      *WriterOptions
	done      <-chan struct{}
	due       chan struct{} // cap 1: a keep-alive is due; nil without keep-alives
	keepAlive *time.Timer   // signals due and restarts a parked writer
	idle      *time.Timer   // the ParkAfter timer
	items     []Item        // the batch, recycled through Drain
}

// Serve runs the client's one writer: it drains the queue into w's
// batches, calls w.KeepAlive when one is due and w.Finish when the
// connection ends, which is when the hub closes the client, a write fails,
// or done is closed. A transport closes done when its reader ends, then
// calls Interrupt, which restarts a parked writer to see it.
//
// With opts.ParkAfter set, Serve starts the writer and returns; the
// writer parks when idle (see WriterOptions.ParkAfter) and is restarted by
// the next item queued, a due keep-alive, a failure, Interrupt or Close.
// Otherwise Serve returns once Finish has. Serve is called once per client.
//
// The restart runs under Client.mu, and under shard.mu when Close triggers
// it, so it only starts a goroutine. Parking checks for work (queued items,
// a failure, a due keep-alive, a closed done) under the same lock that
// whoever makes work takes to restart it: no wake is lost between the
// writer's last look and its parking.
func (c *Client) Serve(w BatchWriter, opts *WriterOptions, done <-chan struct{}) {
	wr := &c.w
	wr.bw, wr.opts, wr.done = w, opts, done
	if d := opts.KeepAlive; d > 0 {
		wr.due = make(chan struct{}, 1)
		if opts.KeepAliveJitter {
			d = d/2 + rand.N(d/2+1)
		}
		wr.keepAlive = time.AfterFunc(d, c.keepAliveDue)
	}
	if opts.ParkAfter <= 0 {
		c.writeLoop()
		return
	}
	go c.writeLoop()
}

// keepAliveDue is the keep-alive timer's func: it marks a keep-alive due
// and restarts a parked writer to make it.
func (c *Client) keepAliveDue() {
	signal(c.w.due)
	c.Interrupt()
}

// Interrupt restarts the writer if it is parked, so that it sees the
// transport's done channel closed (call it after closing done). It is
// cheap when the writer runs.
func (c *Client) Interrupt() {
	c.mu.Lock()
	c.unparkLocked()
	c.mu.Unlock()
}

// unparkLocked starts a new writer if the writer is parked. c.mu is held on
// entry.
func (c *Client) unparkLocked() {
	if c.parked {
		c.parked = false
		go c.writeLoop()
	}
}

// writeLoop is the writer: it waits for work and writes it, and parks after
// ParkAfter without work.
func (c *Client) writeLoop() {
	wr := &c.w
	for wrote := false; c.awaitWork(wrote); wrote = true {
		items, err := c.Drain(wr.items)
		if err != nil {
			c.endWriter(End{Closed: err})
			return
		}
		if len(items) == 0 {
			wr.items = items
			continue
		}
		err = wr.bw.WriteBatch(items)
		if err == nil {
			c.written(items)
		}
		// Let the batch's messages go now rather than at the next Drain.
		clear(items)
		if cap(items) > keepItems {
			items = nil
		}
		wr.items = items
		if err != nil {
			c.endWriter(End{Failed: err})
			return
		}
		if wr.opts.WritesKeepAlive && wr.keepAlive != nil {
			wr.keepAlive.Reset(wr.opts.KeepAlive)
		}
	}
}

// awaitWork waits up to ParkAfter for the queue to have work, making
// keep-alives meanwhile. It reports true when there is work; false when the
// writer has finished the connection or parked. A writer that has written
// nothing (wrote is false: it was started for a keep-alive) parks as soon as
// the keep-alive is made.
func (c *Client) awaitWork(wrote bool) bool {
	wr := &c.w
	var idle <-chan time.Time
	if d := wr.opts.ParkAfter; d > 0 {
		if wr.idle == nil {
			wr.idle = time.NewTimer(d)
		} else {
			wr.idle.Reset(d)
		}
		idle = wr.idle.C
	}
	for {
		select {
		case <-c.wake:
			return true
		case <-wr.due:
			if err := wr.bw.KeepAlive(); err != nil {
				c.endWriter(End{Failed: err})
				return false
			}
			wr.keepAlive.Reset(wr.opts.KeepAlive)
			if !wrote && idle != nil {
				return c.park()
			}
		case <-wr.done:
			c.endWriter(End{})
			return false
		case <-idle:
			return c.park()
		}
	}
}

// park parks the writer. It reports true, not parked, when there is work
// meanwhile, else false: this goroutine must end.
func (c *Client) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 || c.err != nil || len(c.w.due) > 0 || isClosed(c.w.done) {
		return true
	}
	c.parked = true
	return false
}

// endWriter stops the writer's timers and finishes the connection.
func (c *Client) endWriter(end End) {
	wr := &c.w
	if wr.keepAlive != nil {
		wr.keepAlive.Stop()
	}
	if wr.idle != nil {
		wr.idle.Stop()
	}
	wr.bw.Finish(end)
}

// latencySample: written observes one batch in latencySample of each
// connection. An observation costs about 100 ns when every writer makes
// them at once (a shared histogram); at a million writes a second that
// would be 5 % of the machine, sampled it is negligible, and with many
// connections every event is still observed many times over.
const latencySample = 16

// written gives the publish-to-write latency of the first live event of a
// written batch (the one that waited longest) to Options.ObserveLatency, for
// one batch in latencySample. The writer's only.
func (c *Client) written(items []Item) {
	observe := c.hub.opts.ObserveLatency
	if observe == nil {
		return
	}
	c.writes++
	if c.writes%latencySample != 1 {
		return
	}
	for _, it := range items {
		if it.Live && it.Msg != nil {
			observe(time.Since(it.Msg.Time))
			return
		}
	}
}

// isClosed reports whether ch is closed (a nil ch is not).
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// signal leaves a token in ch, a channel of capacity 1, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
