// Package natsbroker is a hub.Broker on NATS JetStream (nats.go): the event
// log of a cluster of Herald nodes, kept in one stream.
//
// Topic a.b is stored as subject <Subjects>.a.b (default herald.ev.a.b), so
// Herald's `*` and `>` are NATS's own wildcards and history reads filter on
// the server. The stream sequence is the cursor's sequence, and the stream's
// creation time is the log's epoch: a stream that was lost and created again
// is a new log, and clients resume with a reset.
//
// A batch of several events is appended as consecutive messages chained by
// Nats-Expected-Last-Msg-Id, so nothing can land inside it. If another
// publisher's message gets in between (or the publisher dies half way), the
// part already stored is abandoned: readers skip it, and the publisher tries
// again. A batch is therefore all or nothing to every reader, at the price
// of positions that no event holds. Publishes from one node never collide
// with each other (its one sender writes each batch's messages one after
// the other, see sender.go), so a single node leaves no such holes.
// docs/design.md explains why NATS 2.9 needs this.
//
// A publish is stored once or not at all. Every event
// carries a message ID, and the stream stores a message ID once within its
// duplicate window, answering a repeat with the first position: after a
// lost acknowledgement the broker sends the same messages again to learn
// the outcome (see Publish). The connection keeps no reconnect buffer, so
// that nothing sent while disconnected is stored after the publish has
// failed. A failure to reach NATS wraps hub.ErrUnavailable; a publish
// whose outcome could not be learnt in time returns hub.ErrUnconfirmed.
//
// The state of keyed topics is derived from the log into a second stream
// by an applier on every node, and a snapshot adds the log's events that
// the applier has not yet written: see state.go.
//
// A Broker is safe for concurrent use.
package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
)

// Options configures a Broker.
type Options struct {
	// Conn is the connection to NATS. The Broker does not close it. It
	// must be made with nats.ReconnectBufSize(-1): a connection that
	// buffers while disconnected would send a publish that has already
	// failed once it reconnects.
	Conn *nats.Conn
	// Stream names the JetStream stream; nodes that share a Stream share a
	// log. Default "HERALD".
	Stream string
	// Subjects is the subject prefix of the events; default "herald.ev".
	Subjects string
	// Size is the most events retained (the stream's MaxMsgs); default
	// 10000. TTL, if set, is the stream's MaxAge (at least 100ms, NATS's
	// minimum).
	Size int
	TTL  time.Duration
	// MaxBytes bounds the stream's size (its MaxBytes: JetStream counts
	// each message's subject, headers and data plus a few dozen bytes);
	// the oldest events go first. Default hub.DefaultHistoryBytes.
	MaxBytes int
	// Replicas is the stream's replication factor in a NATS cluster;
	// default 1.
	Replicas int
	// Memory keeps the stream in memory rather than on disk. A restarted
	// NATS server then loses the log, and clients resume with a reset.
	Memory bool
	// Idle is how long delivery waits for a message before it checks that
	// the stream is still the same; default 2s.
	Idle time.Duration
	// StateMaxKeys bounds the keys of one topic's state, StateMaxBytes the
	// state stream's size (JetStream's count, as MaxBytes); past them the
	// least recently written keys go first. Defaults
	// hub.DefaultStateMaxKeys and hub.DefaultStateMaxBytes. See state.go.
	StateMaxKeys  int
	StateMaxBytes int
	// PresenceMaxMembers bounds the members of one topic; default
	// hub.DefaultPresenceMaxMembers. See presence.go.
	PresenceMaxMembers int
	// NodeTTL is how long the node's heartbeat lives unless refreshed (every
	// third of it); the members of a node whose heartbeat expired are made
	// to leave by the other nodes. Default DefaultNodeTTL. See node.go.
	NodeTTL time.Duration
	// DedupeWindow is how long the stream remembers message IDs (its
	// Duplicates window), and so how long a hub.Draft.Dedupe key is
	// remembered. JetStream keeps every message ID of the window in
	// memory, those of events without a dedupe key too, so the default is
	// short: 10 s, the least the broker needs for its own retries. A node
	// that publishes with dedupe keys (an outbox source) sets it to at
	// least hub.DefaultDedupeWindow. Nodes sharing a stream should share it.
	DedupeWindow time.Duration
	Logger       *slog.Logger
}

// Headers of a stored event. The subject carries the topic and the body
// the data.
const (
	hdrType  = "Herald-Type"  // omitted for the default type
	hdrKey   = "Herald-Key"   // omitted for an event without a key
	hdrTime  = "Herald-Time"  // Unix microseconds, taken by the publishing node
	hdrBatch = "Herald-Batch" // "ID INDEX COUNT" on each event of a batch of several
)

// Broker is the JetStream-backed hub.Broker.
//
// Lock order (a goroutine holding one may take only those below it):
//
//	pubs      (a presence change holds it alone across its fold and
//	          conditional append, round trips bounded by the change's
//	          context; a publish attempt holds it shared; both wait for
//	          it no longer than their contexts allow)
//	streamMu, state.mu, pres.mu, presCache.mu, unreported's mutex
//	          (leaves, held for no call: never across a round trip to
//	          NATS)
type Broker struct {
	o      Options
	js     jetstream.JetStream
	prefix string // Subjects + "."

	streamMu sync.Mutex // guards stream (recreated after a loss)
	stream   jetstream.Stream
	epoch    atomic.Pointer[string]

	// sender sends this node's events to the log (sender.go).
	sender *sender
	// pubs lets a presence change hold this node's publishes back: each
	// attempt of a publish holds it shared, and a change that raced
	// other events holds it alone (presence.go).
	pubs    pubGate
	batchID atomic.Uint64
	idBase  string
	// pubWait bounds a publish's attempts: confirmWait, or the stream's
	// duplicate window if a short TTL narrowed it, since an attempt sent
	// again after the window would be stored again.
	pubWait time.Duration

	ctx             context.Context
	cancel          context.CancelFunc
	done            chan struct{} // closed when delivery has ended; nil before Start
	applyDone       chan struct{} // closed when the state applier has ended; nil before Start
	started, closed atomic.Bool

	node       string
	countLocal func() map[string]int
	counting   sync.WaitGroup

	deliverErrors atomic.Int64 // see BrokerStats

	state   stateStore
	applied atomic.Pointer[applied] // the state applier's position; nil before Start
	feed    chan feedChunk          // from delivery to the state applier; nil before Start
	// flushNow asks the state applier to write what it holds now.
	flushNow chan struct{}
	// feedCap is feed's capacity: feedChunks unless a test narrows it to
	// make the applier catch up; catchUps counts the applier's reads of
	// the stream (see applyLoop).
	feedCap  int
	catchUps atomic.Int64
	// flushHook, set by a test before Start, is called by the applier
	// before each write round with the log positions it is about to
	// write; nil otherwise.
	flushHook func(seqs []uint64)
	// changeHook, set by a test, is called by a presence change at its
	// steps: "append" before each attempt, "held" once it holds pubs
	// alone, "appended" once its event is in the log; nil otherwise.
	changeHook func(step string)

	pres       stateStore     // the presence stream (presence.go)
	presCache  presCache      // members of topics asked about (presence_cache.go)
	unreported unreported     // see presence.go
	nodes      sync.WaitGroup // the heartbeat goroutine (node.go)
	preloading sync.WaitGroup // the load of every topic's members (presence_preload.go)
	halt       chan struct{}  // closed by a test to stop the heartbeat as a crash would
	revive     func()
	// control is set by OnControl; controlling is the goroutine that
	// hands it the control messages (control.go).
	control     func([]byte)
	controlling sync.WaitGroup
	skipped     func(uint64) // set by OnSkip
	// hasMembers: the node has registered as one with members (node.go).
	hasMembers atomic.Bool
	paused     atomic.Bool // a test's: no heartbeats nor sweeps meanwhile
	// compactFrom is where the next compaction scans from; compactAge
	// is compactAge unless a test shortens it.
	compactFrom      atomic.Uint64
	stateCompactFrom atomic.Uint64 // the same for the state stream
	compactAge       atomic.Int64  // a time.Duration
}

// pubGate is a readers-writer lock whose waits end with a context: a
// publish must not wait for a presence change past its own time, nor a
// change for the publishes in flight past its own. A change waiting for
// it holds back the publishes that come after it, as sync.RWMutex does,
// so that it gets in on a node that publishes without pause.
type pubGate struct{ w *semaphore.Weighted }

// pubGateSize is the gate's weight: one per publish attempt holding it
// shared, all of it for a presence change; far more than can be in flight.
const pubGateSize = 1 << 40

func newPubGate() pubGate { return pubGate{w: semaphore.NewWeighted(pubGateSize)} }

// share holds the gate shared, or returns ctx's error once ctx is done.
func (g pubGate) share(ctx context.Context) error { return g.w.Acquire(ctx, 1) }

func (g pubGate) unshare() { g.w.Release(1) }

// hold holds the gate alone, or returns ctx's error once ctx is done.
func (g pubGate) hold(ctx context.Context) error { return g.w.Acquire(ctx, pubGateSize) }

func (g pubGate) release() { g.w.Release(pubGateSize) }

// BrokerStats implements hub.BrokerCounter: failures to read the log for
// delivery or to write the state (each retried), and the connection's
// reconnects to NATS.
func (b *Broker) BrokerStats() hub.BrokerStats {
	return hub.BrokerStats{Errors: b.deliverErrors.Load(), Reconnects: int64(b.o.Conn.Stats().Reconnects)}
}

// New connects the broker to its stream, creating the stream if there is
// none and bringing its limits to the options if there is.
func New(ctx context.Context, o Options) (*Broker, error) {
	b, err := newBroker(ctx, o)
	if err != nil {
		return nil, err
	}
	b.startSender()
	return b, nil
}

// newBroker is New without the sender.
func newBroker(ctx context.Context, o Options) (*Broker, error) {
	if o.Conn == nil {
		return nil, errors.New("failed to start NATS broker: Options.Conn is nil")
	}
	if o.Conn.Opts.ReconnectBufSize != -1 {
		return nil, errors.New("failed to start NATS broker: Options.Conn must be made with nats.ReconnectBufSize(-1)")
	}
	if o.Stream == "" {
		o.Stream = "HERALD"
	}
	if o.Subjects == "" {
		o.Subjects = "herald.ev"
	}
	if o.Size <= 0 {
		o.Size = 10000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = hub.DefaultHistoryBytes
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Idle <= 0 {
		o.Idle = 2 * time.Second
	}
	if o.TTL > 0 && o.TTL < 100*time.Millisecond {
		o.TTL = 100 * time.Millisecond
	}
	if o.StateMaxKeys <= 0 {
		o.StateMaxKeys = hub.DefaultStateMaxKeys
	}
	if o.StateMaxBytes <= 0 {
		o.StateMaxBytes = hub.DefaultStateMaxBytes
	}
	if o.PresenceMaxMembers <= 0 {
		o.PresenceMaxMembers = hub.DefaultPresenceMaxMembers
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Acknowledgements lost in a disconnect must not pile up. The sender
	// must not stall on nats.go's own bound: the node's (sender.go) is
	// below it, though an attempt sent again after a lost
	// acknowledgement counts there until the first one's times out.
	js, err := jetstream.New(o.Conn, jetstream.WithPublishAsyncTimeout(confirmWait),
		jetstream.WithPublishAsyncMaxPending(4*pipeMaxEvents))
	if err != nil {
		return nil, fmt.Errorf("failed to start NATS broker: %w", err)
	}
	b := &Broker{o: o, js: js, prefix: o.Subjects + ".", idBase: hub.NewEpoch(), node: hub.NewEpoch(),
		halt: make(chan struct{}), sender: newSender(), pubs: newPubGate()}
	b.pubWait = min(confirmWait, b.config().Duplicates)
	b.compactAge.Store(int64(compactAge))
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if _, err := b.ensureStream(ctx); err != nil {
		b.cancel()
		return nil, fmt.Errorf("failed to start NATS broker: %w", err)
	}
	return b, nil
}

func (b *Broker) config() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        b.o.Stream,
		Description: "Herald event log",
		Subjects:    []string{b.prefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     int64(b.o.Size),
		MaxBytes:    int64(b.o.MaxBytes),
		MaxAge:      b.o.TTL,
		Replicas:    b.o.Replicas,
		Storage:     jetstream.FileStorage,
		AllowDirect: true,
		// Message IDs chain a batch and let a publish be sent again after
		// a lost acknowledgement (Publish); they need not be remembered
		// long, unless dedupe keys are (DedupeWindow).
		Duplicates: max(dupWindow, b.o.DedupeWindow),
	}
	if b.o.TTL > 0 && b.o.TTL < cfg.Duplicates { // NATS wants no more
		cfg.Duplicates = b.o.TTL
	}
	if b.o.Memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	return cfg
}

// ensureStream creates the stream, or updates its limits, and records its
// epoch. Several nodes may do it at once: creating an existing stream with
// the same configuration is a no-op, so they agree on one stream.
func (b *Broker) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := b.js.CreateOrUpdateStream(ctx, b.config())
	if err != nil {
		return nil, fmt.Errorf("failed to create stream %s: %w", b.o.Stream, b.fail(err))
	}
	b.setStream(s, s.CachedInfo())
	return s, nil
}

func (b *Broker) setStream(s jetstream.Stream, info *jetstream.StreamInfo) {
	e := epochOf(info)
	b.streamMu.Lock()
	b.stream = s
	b.streamMu.Unlock()
	b.epoch.Store(&e)
}

func (b *Broker) currentStream() jetstream.Stream {
	b.streamMu.Lock()
	defer b.streamMu.Unlock()
	return b.stream
}

func (b *Broker) currentEpoch() string { return *b.epoch.Load() }

// epochOf names a stream's incarnation by its creation time, which every
// node reads alike, in base 36 so that it is a valid cursor epoch.
func epochOf(info *jetstream.StreamInfo) string {
	return strconv.FormatInt(info.Created.UnixNano(), 36)
}

// info reads the stream's state. A stream that is gone (NATS lost it) is
// created again, which starts a new epoch.
func (b *Broker) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	s := b.currentStream()
	info, err := s.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if s, err = b.ensureStream(ctx); err != nil {
			return nil, err
		}
		return s.CachedInfo(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", b.o.Stream, b.fail(err))
	}
	if e := epochOf(info); e != b.currentEpoch() {
		b.setStream(s, info)
	}
	return info, nil
}

// Start implements hub.Broker: delivery begins after the log's current end.
func (b *Broker) Start(deliver func([]*hub.Message)) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("failed to start NATS broker: already started")
	}
	bd, err := b.Bounds(b.ctx)
	if err != nil {
		return fmt.Errorf("failed to start NATS broker: %w", err)
	}
	// Nothing is applied yet; that is true of position 0.
	b.applied.Store(&applied{epoch: bd.Epoch})
	b.presCache.advance(nil, bd.Epoch, bd.Last)
	if b.feedCap == 0 {
		b.feedCap = feedChunks
	}
	b.feed = make(chan feedChunk, max(b.feedCap, 0))
	b.flushNow = make(chan struct{}, 1)
	b.applyDone = make(chan struct{})
	go b.applyLoop(bd.Epoch, bd.Last)
	b.done = make(chan struct{})
	go b.deliverLoop(deliver, bd.Epoch, bd.Last)
	if b.countLocal != nil {
		b.counting.Add(1)
		go b.count()
	}
	b.nodes.Add(1)
	go b.nodeLoop()
	b.preloading.Add(1)
	go b.preloadPresence(bd.Epoch, bd.Last)
	if b.control != nil {
		if err := b.subscribeControl(); err != nil {
			b.o.Logger.Warn("nats broker: control messages will not reach this node", "err", err)
		}
	}
	return nil
}

// deliverLoop is the delivery goroutine: it follows the whole stream from
// the last resolved position (see follow) until Close, hands every event
// to deliver, and feeds the state applier (see feedChunk).
func (b *Broker) deliverLoop(deliver func([]*hub.Message), epoch string, last uint64) {
	defer close(b.done)
	fedEpoch, fed := epoch, last
	b.follow("delivery", epoch, last, b.skipped, func(out []*hub.Message, epoch string, resolved uint64) (time.Duration, error) {
		b.presCache.advance(out, epoch, resolved) // first: a snapshot may be ahead of delivery, as the log is
		if len(out) > 0 {
			deliver(out)
		}
		if epoch != fedEpoch {
			fedEpoch, fed = epoch, 0
		}
		b.feedApplier(out, epoch, fed, resolved)
		fed = resolved
		return 0, nil
	})
}

// follow reads the stream in order from last+1 until Close, with an
// ordered consumer. nats.go's ordered consumer recreates itself on a gap
// or a reconnect; follow recreates it after other errors, and checks while
// idle that the stream is still the same one: a stream created again
// numbers from 1 under a new epoch, which an ordered consumer waiting past
// the old end would never see.
//
// handle gets the events as they become ready (complete batches only, in
// order), with the position up to which the stream has been handed over
// (resolved: before any batch still held); it is also called with no
// events when the stream is idle, or with no position change. handle may
// hold what it got for later: it then returns how soon it wants to be
// called again, even if nothing follows. If handle fails, follow starts
// again after the position of its last success that held nothing. It is
// called from the goroutine that runs follow, one call at a time.
//
// skipped, if not nil, is told where the stream resumes after messages
// that retention dropped before they were read (hub.SkipReporter).
func (b *Broker) follow(what, epoch string, last uint64, skipped func(next uint64), handle handler) {
	backoff := 50 * time.Millisecond
	for b.ctx.Err() == nil {
		var err error
		was := epoch
		last, epoch, err = b.consume(handle, skipped, epoch, last)
		if b.ctx.Err() != nil || errors.Is(err, errCaughtUp) {
			return
		}
		if epoch != was {
			_, _ = handle(nil, epoch, 0) // a new log: nothing of it handed yet
		}
		if err != nil {
			b.o.Logger.Warn("nats broker: reading the stream failed; retrying", "for", what, "err", err, "in", backoff)
			b.deliverErrors.Add(1)
			select {
			case <-time.After(backoff):
			case <-b.ctx.Done():
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// handler is what follow hands the stream to.
type handler func(out []*hub.Message, epoch string, resolved uint64) (hold time.Duration, err error)

// consume hands the stream from last+1 to handle until an error or a new
// epoch, and returns where to go on from.
func (b *Broker) consume(handle handler, skipped func(uint64), epoch string, last uint64) (uint64, string, error) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	cons, err := b.js.OrderedConsumer(b.ctx, b.o.Stream, cfg)
	if err != nil {
		return last, epoch, b.recheck(epoch, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return last, epoch, err
	}
	defer it.Stop()
	asm := assembler{prefix: b.prefix}
	handed := last // the resolved position of handle's last success that held nothing
	var hold time.Duration
	hand := func(out []*hub.Message) error {
		r := asm.resolved(last)
		h, err := handle(out, epoch, r)
		if err != nil {
			return err
		}
		if hold = h; hold == 0 {
			handed = r
		}
		return nil
	}
	var out []*hub.Message
	for {
		// Ready events wait for more only briefly: the stream's count of
		// what follows is a hint, and a stalled batch must not hold them.
		wait := b.o.Idle
		switch {
		case len(out) > 0:
			wait = 5 * time.Millisecond
		case hold > 0:
			wait = min(wait, hold)
		}
		ctx, cancel := context.WithTimeout(b.ctx, wait)
		msg, err := it.Next(jetstream.NextContext(ctx))
		cancel()
		if b.ctx.Err() != nil {
			return handed, epoch, nil
		}
		if errors.Is(err, context.DeadlineExceeded) && len(out) == 0 && hold > 0 && wait < b.o.Idle {
			// handle asked to be called again
			if herr := hand(nil); herr != nil {
				return handed, epoch, herr
			}
			continue
		}
		if err != nil && len(out) > 0 {
			if herr := hand(out); herr != nil {
				return handed, epoch, herr
			}
			out = nil
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				err = nil // idle
			}
			info, ierr := b.info(b.ctx)
			if ierr != nil {
				return handed, epoch, ierr
			}
			if e := epochOf(info); e != epoch {
				b.o.Logger.Warn("nats broker: the stream was lost and created again (new epoch); clients resume with a reset",
					"stream", b.o.Stream, "epoch", e)
				return 0, e, nil
			}
			if err != nil {
				return handed, epoch, err
			}
			if herr := hand(nil); herr != nil {
				return handed, epoch, herr
			}
			continue
		}
		meta, err := msg.Metadata()
		if err != nil {
			b.o.Logger.Error("nats broker: skipping a message without metadata", "err", err)
			continue
		}
		seq := meta.Sequence.Stream
		if last != 0 && seq != last+1 {
			b.o.Logger.Error("nats broker: events were dropped by retention before this node read them",
				"from", last+1, "to", seq-1)
			if skipped != nil {
				skipped(seq)
			}
		}
		last = seq
		m, bi, err := decode(epoch, seq, msg.Subject(), msg.Headers(), msg.Data(), b.prefix)
		if err != nil {
			b.o.Logger.Error("nats broker: skipping an unreadable message", "seq", seq, "err", err)
			asm.abandon(b.o.Logger)
		} else {
			out = append(out, asm.add(m, bi, b.o.Logger)...)
		}
		if meta.NumPending == 0 || len(out) >= 256 {
			if herr := hand(out); herr != nil {
				return handed, epoch, herr
			}
			out = nil
		}
	}
}

// recheck turns a failure to create the consumer on a lost stream into a
// new epoch.
func (b *Broker) recheck(epoch string, err error) error {
	if info, ierr := b.info(b.ctx); ierr == nil && epochOf(info) != epoch {
		return nil // the next round starts on the new stream
	}
	return err
}

// How long a publish may take, how long one attempt may wait for its
// acknowledgement, and the stream's duplicate window: an attempt sent again
// within it finds the first.
const (
	confirmWait = 5 * time.Second
	attemptWait = time.Second
	dupWindow   = 2 * confirmWait
)

// Publish implements hub.Broker. Each attempt goes through the node's
// sender (sender.go), with the node's other publishes, and waits for its
// own acknowledgements. An attempt that may have reached the
// stream without an answer (a timeout, or a disconnect while the
// acknowledgement was due) is sent again with the same message IDs until
// the stream answers, as long as the first is within the duplicate
// window: the stream then reports the first positions, or stores the
// events now. Past that the outcome is unknown, hub.ErrUnconfirmed. An
// attempt that could not be sent (disconnected) stored nothing.
func (b *Broker) Publish(ctx context.Context, drafts []hub.Draft) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to publish to NATS: %w", err)
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(b.pubWait))
	defer cancel()
	when := start.UTC().Truncate(time.Microsecond)
	id := b.nextID()
	dedupe, size := false, 0
	for i := range drafts {
		d := &drafts[i]
		size += len(d.Topic) + len(d.Type) + len(d.Key) + len(d.Data) + len(d.Dedupe) + msgOverhead
		if d.Dedupe != "" {
			dedupe = true
		}
	}
	w := groupcommit.Weight{Events: len(drafts), Bytes: size}
	if err := b.sender.pipe.Admit(ctx, w); err != nil {
		if errors.Is(err, hub.ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("failed to publish to NATS: %w", hub.Unavailable(err))
	}
	defer b.sender.pipe.Release(w)
	var seqs []uint64
	var err error
	sent, recreated, collisions := false, false, 0
	backoff := 20 * time.Millisecond
	for {
		if gerr := b.pubs.share(ctx); gerr != nil {
			// A presence change holds the node's publishes back and its
			// round trips to JetStream take longer than this publish may.
			gerr = fmt.Errorf("failed to wait for a presence change of this node: %w", gerr)
			if sent { // an earlier attempt may have been stored
				return nil, fmt.Errorf("failed to publish to NATS: %w: %v", hub.ErrUnconfirmed, gerr)
			}
			return nil, fmt.Errorf("failed to publish to NATS: %w", hub.Unavailable(gerr))
		}
		switch {
		case dedupe:
			seqs, err = b.publishDeduped(ctx, id, drafts, when)
		case len(drafts) == 1:
			seqs, err = b.publishOne(ctx, id, encode(b.prefix, drafts[0], when))
		default:
			seqs, err = b.publishBatch(ctx, id, drafts, when)
		}
		b.pubs.unshare()
		switch {
		case err == nil:
			epoch := b.currentEpoch()
			out := make([]*hub.Message, len(drafts))
			for i, d := range drafts {
				if seqs[i] == 0 {
					continue // a duplicate: its dedupe key is in the log
				}
				out[i] = hub.NewMessage(hub.Event{
					ID: hub.Cursor{Epoch: epoch, Seq: seqs[i]}, Topic: d.Topic, Type: d.Type, Key: d.Key, Data: d.Data, Time: when,
				})
			}
			return out, nil
		case errors.Is(err, errCollided) && collisions < 8:
			// What this ID stored is abandoned for good: start afresh.
			collisions++
			id, sent = b.nextID(), false
			continue
		case errors.Is(err, errNoAnswer):
			sent = true
		case errors.Is(err, hub.ErrClosed):
			if sent { // an earlier attempt may have been stored
				return nil, fmt.Errorf("failed to publish to NATS: %w: %v", hub.ErrUnconfirmed, err)
			}
			return nil, err
		case !recreated && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)):
			// NATS lost the stream: create it again (a new epoch), once.
			recreated = true
			if _, cerr := b.ensureStream(ctx); cerr == nil {
				continue
			}
			fallthrough
		case notSent(err):
			if !sent {
				return nil, fmt.Errorf("failed to publish to NATS: %w", hub.Unavailable(err))
			}
		default:
			if sent { // an earlier attempt may have been stored
				return nil, fmt.Errorf("failed to publish to NATS: %w: %v", hub.ErrUnconfirmed, err)
			}
			return nil, fmt.Errorf("failed to publish to NATS: %w", b.fail(err))
		}
		// The outcome is unknown: ask again with the same IDs.
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("failed to publish to NATS: %w: %v", hub.ErrUnconfirmed, err)
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// nextID names a publish (an event, or a batch whose events add an index).
func (b *Broker) nextID() string {
	return b.idBase + strconv.FormatUint(b.batchID.Add(1), 36)
}

// errNoAnswer marks an attempt that may have reached the stream but whose
// acknowledgement did not come.
var errNoAnswer = errors.New("no acknowledgement from the stream")

// noAnswer wraps err with errNoAnswer if it says that an acknowledgement
// did not come: a timeout, or a disconnect while it was due.
func noAnswer(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		return fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	return err
}

// notSent reports whether err says that a message was not sent: the
// connection was down, closing or closed, or nobody was there to store it.
func notSent(err error) bool {
	return errors.Is(err, errNotSent) || errors.Is(err, jetstream.ErrTooManyStalledMsgs) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, nats.ErrInvalidConnection) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// fail marks err as hub.ErrUnavailable if it is a failure to reach NATS or
// JetStream rather than a refusal of the request.
func (b *Broker) fail(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		if apiErr.Code != http.StatusServiceUnavailable { // JetStream is not available now
			return err
		}
	case !notSent(err) && !errors.Is(err, errNoAnswer) && !hub.IsConnFailure(err) &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrDisconnected) &&
		!errors.Is(err, nats.ErrConnectionReconnecting) && !errors.Is(err, nats.ErrNoServers) &&
		!errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, nats.ErrStaleConnection):
		return err
	}
	return hub.Unavailable(err)
}

func (b *Broker) publishOne(ctx context.Context, id string, m *nats.Msg) ([]uint64, error) {
	ack, refused, err := b.pipelineOne(ctx, m, jetstream.WithMsgID(id))
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, noAnswer(refused)
	}
	return []uint64{ack.Sequence}, nil
}

// publishDeduped sends each draft as a message of its own, without a
// batch header, all at once: a draft with a dedupe key under the message
// ID "dd." and its key, which JetStream checks against the IDs it stored
// within the stream's duplicates window (Options.DedupeWindow), a draft
// without one under the publish's ID. JetStream acknowledges a duplicate
// with the original's position, without storing it again; its place in
// the result is 0. The drafts go in order on one connection, so they are
// stored in order; if one fails, those after it may be stored, and the
// caller sends them all again, which stores the rest.
func (b *Broker) publishDeduped(ctx context.Context, id string, drafts []hub.Draft, when time.Time) ([]uint64, error) {
	msgs, opts := make([]*nats.Msg, len(drafts)), make([][]jetstream.PublishOpt, len(drafts))
	for i := range drafts {
		mid := id + "." + strconv.Itoa(i)
		if drafts[i].Dedupe != "" {
			mid = "dd." + drafts[i].Dedupe
		}
		msgs[i], opts[i] = encode(b.prefix, drafts[i], when), []jetstream.PublishOpt{jetstream.WithMsgID(mid)}
	}
	acks, refused, err := b.pipeline(ctx, msgs, opts)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, noAnswer(refused)
	}
	seqs := make([]uint64, len(drafts))
	for i, ack := range acks {
		if !ack.Duplicate || drafts[i].Dedupe == "" {
			seqs[i] = ack.Sequence
		}
	}
	return seqs, nil
}

// errCollided reports a batch that another node's message interrupted.
var errCollided = errors.New("batch interrupted by another publisher")

// publishBatch sends every message of the batch at once, each expecting
// its predecessor as the stream's last message. It returns errCollided if
// the stream refused one for that reason: what was stored before it is
// abandoned, and the caller tries again with a new batch ID. Sent again
// with the same ID, the messages stored before are acknowledged with their
// positions, and the rest continue the chain.
func (b *Broker) publishBatch(ctx context.Context, id string, drafts []hub.Draft, when time.Time) ([]uint64, error) {
	n := strconv.Itoa(len(drafts))
	msgs, opts := make([]*nats.Msg, len(drafts)), make([][]jetstream.PublishOpt, len(drafts))
	for i := range drafts {
		msgs[i] = encode(b.prefix, drafts[i], when)
		msgs[i].Header.Set(hdrBatch, id+" "+strconv.Itoa(i)+" "+n)
		opts[i] = []jetstream.PublishOpt{jetstream.WithMsgID(id + "." + strconv.Itoa(i))}
		if i > 0 {
			opts[i] = append(opts[i], jetstream.WithExpectLastMsgID(id+"."+strconv.Itoa(i-1)))
		}
	}
	acks, refused, err := b.pipeline(ctx, msgs, opts)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		var apiErr *jetstream.APIError
		if errors.As(refused, &apiErr) && apiErr.ErrorCode == jsErrWrongLastMsgID {
			return nil, errCollided
		}
		return nil, noAnswer(refused)
	}
	seqs := make([]uint64, len(drafts))
	for i, ack := range acks {
		seqs[i] = ack.Sequence
	}
	return seqs, nil
}

// jsErrWrongLastMsgID is JetStream's refusal of a message whose expected
// last message ID is not the stream's.
const jsErrWrongLastMsgID jetstream.ErrorCode = 10070

// Bounds implements hub.Broker. A batch still being written at the end of
// the log is not yet part of it: Last stops before it, so that delivery
// started from Last+1 gets the whole batch.
func (b *Broker) Bounds(ctx context.Context) (hub.Bounds, error) {
	if b.closed.Load() {
		return hub.Bounds{}, hub.ErrClosed
	}
	info, err := b.info(ctx)
	if err != nil {
		return hub.Bounds{}, err
	}
	st := info.State
	bd := hub.Bounds{Epoch: epochOf(info), First: st.FirstSeq, Last: st.LastSeq}
	if st.Msgs == 0 {
		bd.First = st.LastSeq + 1
	}
	if st.Msgs > 0 {
		start, pending, err := b.tailBatch(ctx, st.LastSeq)
		if err != nil {
			return hub.Bounds{}, err
		}
		if pending {
			bd.Last = start - 1
		}
	}
	return bd, nil
}

// Read implements hub.Broker. With one pattern the stream filters on the
// server; with several it reads every event and filters here, bounded by
// MaxScan.
func (b *Broker) Read(ctx context.Context, req hub.ReadRequest) (hub.ReadResult, error) {
	if req.Limit <= 0 {
		return hub.ReadResult{}, fmt.Errorf("failed to read history: limit %d must be positive", req.Limit)
	}
	if b.closed.Load() {
		return hub.ReadResult{}, hub.ErrClosed
	}
	info, err := b.info(ctx)
	if err != nil {
		return hub.ReadResult{}, err
	}
	epoch, st := epochOf(info), info.State
	res := hub.ReadResult{Next: req.After}
	if req.After >= st.LastSeq {
		return res, nil
	}
	if st.Msgs == 0 || req.After+1 < st.FirstSeq {
		return hub.ReadResult{}, hub.ErrHistoryGone
	}
	filter := ""
	if len(req.Patterns) == 1 {
		filter = b.prefix + req.Patterns[0].String()
	}
	c, err := b.openReader(ctx, filter, req.After+1)
	if err != nil {
		return hub.ReadResult{}, err
	}
	defer c.close()
	batches := batchCache{}
	for !c.done() {
		want := 256
		if req.MaxScan > 0 {
			if c.fetched >= req.MaxScan {
				res.More = true
				return res, nil
			}
			want = min(want, req.MaxScan-c.fetched)
		}
		page, err := c.fetch(ctx, want)
		if err != nil {
			return hub.ReadResult{}, err
		}
		for _, rm := range page {
			m, bi, err := decode(epoch, rm.seq, rm.subject, rm.header, rm.data, b.prefix)
			if err != nil {
				res.Next = rm.seq // unreadable: skipped, as delivery does
				continue
			}
			if bi != nil {
				state, err := batches.state(ctx, b, bi, rm.seq)
				if err != nil {
					return hub.ReadResult{}, err
				}
				switch state {
				case batchPending:
					// Not written to the end yet: the log ends before it.
					res.Next, res.More = max(req.After, bi.start(rm.seq)-1), false
					return res, nil
				case batchAbandoned:
					res.Next = rm.seq
					continue
				}
			}
			if len(res.Messages) == req.Limit {
				res.More = true
				return res, nil
			}
			res.Next = rm.seq
			if matchAny(req.Patterns, m.Topic) {
				res.Messages = append(res.Messages, m)
			}
		}
	}
	// Every matching event up to the end seen at the start was read.
	res.Next = max(res.Next, st.LastSeq)
	return res, nil
}

func matchAny(ps []hub.Pattern, topic string) bool {
	for _, p := range ps {
		if p.Match(topic) {
			return true
		}
	}
	return false
}

// Latest implements hub.Broker. JetStream reads forwards only, so it reads
// ever wider windows at the end of the log until one holds enough events
// of the topic.
func (b *Broker) Latest(ctx context.Context, topic string, limit int) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	info, err := b.info(ctx)
	if err != nil {
		return nil, err
	}
	epoch, st := epochOf(info), info.State
	if st.Msgs == 0 || limit <= 0 {
		return nil, nil
	}
	window := uint64(max(4*limit, 64))
	for {
		from := st.FirstSeq
		if st.LastSeq-st.FirstSeq+1 > window {
			from = st.LastSeq - window + 1
		}
		out, err := b.readTail(ctx, topic, from, epoch, st.LastSeq, limit)
		if err != nil {
			return nil, err
		}
		if len(out) < limit && from > st.FirstSeq {
			window *= 4
			continue
		}
		return out, nil
	}
}

// readTail reads the topic's events from position from up to last and
// keeps the newest limit complete ones.
func (b *Broker) readTail(ctx context.Context, topic string, from uint64, epoch string, last uint64, limit int) ([]*hub.Message, error) {
	c, err := b.openReader(ctx, b.prefix+topic, from)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var out []*hub.Message
	batches := batchCache{}
	for !c.done() {
		page, err := c.fetch(ctx, 256)
		if err != nil {
			return nil, err
		}
		for _, rm := range page {
			if rm.seq > last {
				continue
			}
			m, bi, err := decode(epoch, rm.seq, rm.subject, rm.header, rm.data, b.prefix)
			if err != nil {
				continue
			}
			if bi != nil {
				state, err := batches.state(ctx, b, bi, rm.seq)
				if err != nil {
					return nil, err
				}
				if state != batchComplete {
					continue
				}
			}
			out = append(out, m)
			if len(out) > limit {
				out = out[1:]
			}
		}
	}
	return out, nil
}

// Topics implements hub.Broker from the stream's per-subject counts. Events
// of abandoned batch attempts are counted too: they are rare, and this is
// an overview for people.
func (b *Broker) Topics(ctx context.Context) ([]hub.TopicHistory, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	info, err := b.currentStream().Info(ctx, jetstream.WithSubjectFilter(b.prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", b.o.Stream, b.fail(err))
	}
	out := make([]hub.TopicHistory, 0, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		out = append(out, hub.TopicHistory{Topic: strings.TrimPrefix(subj, b.prefix), Events: int(n)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// Ping implements hub.Broker: the connection is up and the stream answers.
func (b *Broker) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return hub.ErrClosed
	}
	if s := b.o.Conn.Status(); s != nats.CONNECTED {
		return fmt.Errorf("failed to reach NATS: %w", hub.Unavailable(fmt.Errorf("connection %s", s)))
	}
	if _, err := b.info(ctx); err != nil {
		return fmt.Errorf("failed to reach NATS: %w", b.fail(err))
	}
	return nil
}

// Close implements hub.Broker: it stops delivery and waits for it, so
// deliver is not called after Close returns. The NATS connection stays open.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	b.stopSender()
	if b.done != nil {
		<-b.done
		<-b.applyDone
	}
	b.counting.Wait()
	b.nodes.Wait()
	b.preloading.Wait()
	b.controlling.Wait()
	return nil
}
