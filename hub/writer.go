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
	// Unsubscribed, if set, encodes the frame that tells the connection
	// the control API removed some of its subscriptions (the patterns as
	// written); the hub queues it after the events already queued for
	// them. Nil: the connection is not told.
	Unsubscribed func(patterns []string) []byte
	// Linger is how long the writer, woken by work less than Linger after
	// its previous write, waits for more before it drains the queue, so
	// that what is queued meanwhile goes out in the same write: fewer
	// writes (one syscall each) for up to Linger more latency. A writer
	// woken later than that writes at once: a connection whose items come
	// further apart than Linger would gain nothing by waiting, and pays
	// nothing. A failure or the end of the transport ends the wait early.
	// Zero: no wait.
	Linger time.Duration
}

// keepItems is the largest batch slice the writer keeps between batches. A
// burst may grow it much further; keeping that while idle would cost every
// connection that ever saw a burst.
const keepItems = 128

// writer is the state of a served client's writer. Its fields are set by
// Serve and not changed after. Client.parked, Client.due and Client.writes
// belong with it; they sit among the client's other small fields, where
// they take no room of their own.
//
// What a running writer alone uses (its batch slice, its ParkAfter timer)
// lives on its goroutine and goes when it parks: an idle connection keeps
// only this, the keep-alive timer and its func. Every byte here is paid by
// every connection, and Client must stay in its size class (see
// clientSizeClass).
type writer struct {
	bw        BatchWriter
	opts      *WriterOptions
	done      <-chan struct{}
	keepAlive *time.Timer // sets Client.due and wakes the writer; nil without keep-alives
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
	var keepAlive *time.Timer
	if d := opts.KeepAlive; d > 0 {
		if opts.KeepAliveJitter {
			d = d/2 + rand.N(d/2+1)
		}
		// A keep-alive due before the writer starts is made by its first
		// drain.
		keepAlive = time.AfterFunc(d, c.keepAliveDue)
	}
	// Under the lock: the control API reads opts (Unsubscribed), and a
	// direct write the keep-alive timer, from other goroutines
	// (control.go, direct.go).
	c.mu.Lock()
	wr.bw, wr.opts, wr.done, wr.keepAlive = w, opts, done, keepAlive
	if v, ok := c.hub.unsubPending.LoadAndDelete(c); ok && opts.Unsubscribed != nil {
		c.enqueueLocked(Item{Raw: opts.Unsubscribed(v.([]string))})
	}
	// A linger asks for events to wait and go together: not direct.
	_, c.direct = w.(DirectWriter)
	c.direct = c.direct && opts.Linger <= 0 && opts.ParkAfter > 0 && !c.hub.opts.NoDirectWrites
	c.mu.Unlock()
	if opts.ParkAfter <= 0 {
		c.writeLoop()
		return
	}
	go c.writeLoop()
}

// keepAliveDue is the keep-alive timer's func: it marks a keep-alive due
// and wakes the writer, restarting it if it is parked, to make it. A flag
// under the client's lock and the wake channel the writer waits on anyway
// cost a connection nothing, where a channel of its own would cost 96 bytes.
func (c *Client) keepAliveDue() {
	c.mu.Lock()
	c.due = true
	c.wakeLocked()
	c.mu.Unlock()
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

// writeLoop is the writer: it waits for work, writes it and makes due
// keep-alives, and parks after ParkAfter without work. A writer that has
// written nothing (it was started for a keep-alive) parks as soon as the
// keep-alive is made.
func (c *Client) writeLoop() {
	wr := &c.w
	var idle *time.Timer // the ParkAfter timer; this goroutine's own
	if d := wr.opts.ParkAfter; d > 0 {
		idle = time.NewTimer(d)
		defer idle.Stop()
	}
	var linger *time.Timer  // the Linger timer; this goroutine's own
	var lastWrite time.Time // when the last batch was written, with Linger
	if d := wr.opts.Linger; d > 0 {
		linger = time.NewTimer(d)
		defer linger.Stop()
	}
	var items []Item // the batch, recycled through drain
	for wrote := false; c.awaitWork(idle); {
		if linger != nil && time.Since(lastWrite) < wr.opts.Linger {
			// Wait for more work (WriterOptions.Linger).
			linger.Reset(wr.opts.Linger)
			if !c.sleep(linger) {
				return
			}
		}
		var due, flush bool
		var hold time.Duration
		var err error
		items, due, flush, hold, err = c.drain(items)
		if err != nil {
			c.endWriter(End{Closed: err})
			return
		}
		if flush {
			// Before anything else: the rest of a frame a direct write began.
			if err := wr.bw.(DirectWriter).Flush(); err != nil {
				c.endWriter(End{Failed: err})
				return
			}
		}
		if due {
			if err := wr.bw.KeepAlive(); err != nil {
				c.endWriter(End{Failed: err})
				return
			}
			wr.keepAlive.Reset(wr.opts.KeepAlive)
		}
		if len(items) == 0 {
			if (due || flush) && !wrote && idle != nil && !c.park() {
				return
			}
			continue
		}
		err = wr.bw.WriteBatch(items)
		if err == nil {
			c.written(items)
		}
		// Let the batch's messages go now rather than at the next drain.
		clear(items)
		if cap(items) > keepItems {
			items = nil
		}
		if err != nil {
			c.endWriter(End{Failed: err})
			return
		}
		wrote = true
		if linger != nil {
			lastWrite = time.Now()
		}
		if wr.opts.WritesKeepAlive && wr.keepAlive != nil {
			wr.keepAlive.Reset(wr.opts.KeepAlive)
		}
		if hold > 0 && !c.hold(hold) {
			return
		}
	}
}

// awaitWork waits up to ParkAfter (idle; nil: for ever) for a wake: queued
// items, a failure or a due keep-alive. It reports true when woken; false
// when the writer has finished the connection or parked.
func (c *Client) awaitWork(idle *time.Timer) bool {
	wr := &c.w
	if c.direct {
		c.idle()
	}
	var expired <-chan time.Time
	if idle != nil {
		idle.Reset(wr.opts.ParkAfter)
		expired = idle.C
	}
	select {
	case <-c.wake:
		return true
	case <-wr.done:
		c.endWriter(End{})
		return false
	case <-expired:
		return c.park()
	}
}

// sleep waits for t, for the linger or a shaping hold, taking the wakes
// meanwhile: the drain that follows takes their work. It ends early when
// the client fails, and reports false when the transport is done (the
// writer has finished the connection).
func (c *Client) sleep(t *time.Timer) bool {
	for {
		select {
		case <-t.C:
			return true
		case <-c.w.done:
			c.endWriter(End{})
			return false
		case <-c.wake:
			c.mu.Lock()
			failed := c.err != nil
			c.mu.Unlock()
			if failed {
				return true
			}
		}
	}
}

// park parks the writer. It reports true, not parked, when there is work
// meanwhile, else false: this goroutine must end.
func (c *Client) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 || c.err != nil || c.due || c.flush || isClosed(c.w.done) {
		return true
	}
	c.parked = true
	c.writing = false
	return false
}

// idle marks the writer as waiting for work: from here the dispatcher may
// write to the connection itself (direct.go).
func (c *Client) idle() {
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
}

// endWriter stops the keep-alive timer and finishes the connection. No
// direct write runs from here on: Finish closes what they write to.
func (c *Client) endWriter(end End) {
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
	if t := c.w.keepAlive; t != nil {
		t.Stop()
	}
	c.w.bw.Finish(end)
}

// latencySample: written observes one batch in latencySample of each
// connection. An observation costs about 100 ns when every writer makes
// them at once (a shared histogram); at a million writes a second that
// would be 5 % of the machine, sampled it is negligible, and with many
// connections every event is still observed many times over.
const latencySample = 16 // a divisor of 256: Client.writes is a uint8

// written gives the publish-to-write latency of the first live event of a
// written batch (the one that waited longest) to Options.ObserveLatency, for
// one batch with a live event in latencySample: batches without one (a
// reply, a subscription's start) do not count, so a connection's first
// batch of events is observed. The writer's only.
func (c *Client) written(items []Item) {
	if c.hub.opts.ObserveLatency == nil {
		return
	}
	for _, it := range items {
		if it.Live && it.Msg != nil {
			c.observeWrite(it.Msg)
			return
		}
	}
}

// observeWrite counts a written batch whose first live event is m, for
// written; a direct write is a batch of one. It is the writer's, or the
// dispatcher's while the writer is idle (direct.go).
func (c *Client) observeWrite(m *Message) {
	observe := c.hub.opts.ObserveLatency
	if observe == nil {
		return
	}
	if c.writes++; c.writes%latencySample == 1 {
		observe(time.Since(m.Time))
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
