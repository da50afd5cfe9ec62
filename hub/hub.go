package hub

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Hub. The zero value is usable.
type Options struct {
	// Broker orders and retains events; nil means a MemoryBroker with
	// default retention.
	Broker Broker
	// Shards partitions clients and subscriptions; each shard has its own
	// lock, index and dispatcher goroutine. Default: GOMAXPROCS.
	Shards int
	// ShardBuffer is how many published batches may wait for each shard's
	// dispatcher before publishers block. Default 1024.
	ShardBuffer int
	// QueueBytes bounds each client's outbound queue. A live event that would
	// overflow it disconnects the client as a slow consumer. Default 512 KiB.
	QueueBytes int
	// ReplayWait is how long a replay waits for a client's queue to drain
	// before giving up on the client as a slow consumer. Default 10 s.
	ReplayWait time.Duration
	// HistoryReads bounds the reads of history from the broker that run at
	// once for replays, rewinds and history pages; the others wait their
	// turn (or their client's end). A node whose clients all resume at once
	// (the failover of a dead node's subscribers) then reads the log a few
	// pages at a time instead of taking every connection the broker client
	// has, which its own reading of the log and its heartbeats need too.
	// Default DefaultHistoryReads.
	HistoryReads int
	// TailBytes and TailEvents bound the tail of the log that the hub
	// keeps from delivery to serve replays (catch-ups after a resume) that
	// start inside it without reading the broker: when a node dies, its
	// subscribers resume on the others all at once, a few seconds behind,
	// each for its own few topics. Kept only on a broker that reports the
	// events its delivery passes over (SkipReporter). Default
	// DefaultTailBytes and DefaultTailEvents; negative: no tail. Bytes
	// are counted as the memory broker counts its history.
	TailBytes  int64
	TailEvents int
	// Logger receives the hub's rare notices (nil: slog.Default()).
	Logger *slog.Logger
	// ObserveLatency, if set, receives the time from publishing to
	// writing of live events, for one batch in 16 of a connection (see
	// Client.Serve). It is called from the connections' writers and
	// from the dispatchers' direct writes (DirectWriter), concurrently:
	// it must be safe for concurrent use, and cheap.
	ObserveLatency func(time.Duration)
	// PresenceQueue bounds the joins waiting to be published; past it a
	// join is refused. Default DefaultPresenceQueue.
	PresenceQueue int
	// NoDirectWrites has every event go through its connection's writer,
	// even to an idle connection of a transport that could take it from
	// the dispatcher (DirectWriter).
	NoDirectWrites bool
}

// Hub fans events out to subscribed clients. It is safe for concurrent use.
//
// Lock order (a goroutine holding one may take only those below it):
//
//	shard.mu  (RLock in dispatch, Lock in Subscribe/Unsubscribe/Close)
//	Client.mu (a direct write under it takes the connection's write lock only by TryLock)
//	Hub.mu
//	presencer.mu (the presence queue; takes nothing)
//
// Broker locks are never held while calling into the hub except by the
// broker's own deliver call, which takes no hub lock (it only sends on the
// shard channels).
type Hub struct {
	opts    Options
	broker  Broker
	shards  []*shard
	ctx     context.Context // cancelled by Close; parent of every client context
	cancel  context.CancelFunc
	done    chan struct{}
	closed  sync.Once
	wg      sync.WaitGroup // shard dispatchers (replay goroutines belong to their clients)
	nextID  atomic.Uint64
	closing atomic.Bool
	reads   chan struct{} // a token per history read running (Options.HistoryReads)
	tail    *tail         // nil without one (Options.TailBytes)

	published     atomic.Int64
	publishErrors atomic.Int64
	kicked        atomic.Int64
	dropped       atomic.Int64
	conflated     atomic.Int64 // events conflation replaced before they were written
	replayTail    atomic.Int64 // replay pages read from the tail
	replayBroker  atomic.Int64 // replay pages read from the broker

	mu          sync.Mutex
	clients     map[uint64]*Client   // open clients by Client.id (the control API finds them by ConnID)
	users       map[string][]*Client // open clients with a user (SetUser), by user: few per user
	userOf      map[uint64]string    // the user of each client in users
	kinds       map[string]int64     // open clients per transport
	kindNames   []string             // transport kinds by Client.kind, which is an index to keep Client small
	connects    map[string]int64     // clients ever registered, per transport
	disconnects map[disconnectKey]int64

	epoch string // of the log being delivered; the deliver goroutine's
	// newest is the epoch of the newest log, for the shards to take up
	// when they reach its start (dispatchLoop).
	newest atomic.Pointer[string]

	// stateSubs holds, for each client with a state subscription, its
	// state subscriptions by pattern (map[string]*stateSub, read and
	// written under that client's mu): apart from sub, which every idle
	// connection holds, so that it stays small (see sub).
	stateSubs sync.Map // *Client -> map[string]*stateSub
	// unsubPending holds the patterns the control API removed from a
	// client before it was served (Client.Serve), whose Unsubscribed frame
	// Serve queues: apart from Client, as the window is brief and rare.
	unsubPending sync.Map // *Client -> []string

	node string     // the node part of connection IDs (Client.ConnID)
	pres *presencer // publishes joins and leaves
}

// shard owns a partition of the clients and their subscriptions.
type shard struct {
	mu         sync.RWMutex
	idx        *index
	in         chan []*Message
	dispatched atomic.Uint64 // Seq of the last message fully dispatched
	epoch      string        // of the log dispatched; written under mu's write lock, read under it (Client.Subscribe)
	delivered  atomic.Int64
	direct     atomic.Int64 // events the dispatcher wrote to sockets itself (direct.go)
	scratch    []*Client    // dispatcher-owned
	gate       directGate   // dispatcher-owned
}

// New starts a hub on o.Broker (or a fresh memory broker).
func New(o Options) (*Hub, error) {
	if o.Broker == nil {
		o.Broker = NewMemoryBroker(MemoryOptions{})
	}
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.ShardBuffer <= 0 {
		o.ShardBuffer = 1024
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 512 << 10
	}
	if o.ReplayWait <= 0 {
		o.ReplayWait = 10 * time.Second
	}
	if o.HistoryReads <= 0 {
		o.HistoryReads = DefaultHistoryReads
	}
	if o.TailBytes == 0 {
		o.TailBytes = DefaultTailBytes
	}
	if o.TailEvents == 0 {
		o.TailEvents = DefaultTailEvents
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PresenceQueue <= 0 {
		o.PresenceQueue = DefaultPresenceQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		opts:        o,
		broker:      o.Broker,
		reads:       make(chan struct{}, o.HistoryReads),
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		clients:     make(map[uint64]*Client),
		users:       make(map[string][]*Client),
		userOf:      make(map[uint64]string),
		kinds:       make(map[string]int64),
		connects:    make(map[string]int64),
		disconnects: make(map[disconnectKey]int64),
	}
	b, err := h.broker.Bounds(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("failed to read broker bounds: %w", err)
	}
	h.epoch = b.Epoch
	h.node = NewEpoch()
	if nb, ok := h.broker.(NodeBroker); ok {
		h.node = nb.NodeID()
	}
	h.pres = newPresencer(h, o.PresenceQueue)
	if nr, ok := h.broker.(NodeReviver); ok {
		nr.OnRevive(h.rejoinAll)
	}
	h.shards = make([]*shard, o.Shards)
	for i := range h.shards {
		s := &shard{idx: newIndex(), in: make(chan []*Message, o.ShardBuffer), gate: directGate{never: o.NoDirectWrites}}
		// Nothing before the current end of the log will be dispatched.
		s.dispatched.Store(b.Last)
		s.epoch = b.Epoch
		h.shards[i] = s
	}
	if cc, ok := h.broker.(ClusterCounter); ok {
		cc.CountSubscribers(h.localCounts)
	}
	if cb, ok := h.broker.(ControlBroker); ok {
		cb.OnControl(h.onControl)
	}
	if sr, ok := h.broker.(SkipReporter); ok && o.TailBytes > 0 && o.TailEvents > 0 {
		h.tail = newTail(o.TailBytes, o.TailEvents)
		sr.OnSkip(h.tail.skip)
	}
	if err := h.broker.Start(h.deliver); err != nil {
		cancel()
		return nil, fmt.Errorf("failed to start broker: %w", err)
	}
	for _, s := range h.shards {
		h.wg.Add(1)
		go h.dispatchLoop(s)
	}
	go h.pres.run()
	return h, nil
}

// Broker returns the hub's broker.
func (h *Hub) Broker() Broker { return h.broker }

// deliver hands a batch from the broker to every shard, in order. It blocks
// while a shard's buffer is full, which is the back-pressure on publishers.
func (h *Hub) deliver(msgs []*Message) {
	if len(msgs) > 0 && msgs[0].ID.Epoch != h.epoch {
		h.newEpoch(msgs[0].ID.Epoch)
	}
	if h.tail != nil {
		// Before any shard has it: a replay's end is never behind
		// what has been dispatched.
		h.tail.append(msgs)
	}
	for _, s := range h.shards {
		select {
		case s.in <- msgs:
		case <-h.done:
			return
		}
	}
}

// newEpoch handles a replaced log: its sequence numbers start again, so
// every client (whose position is of the old log) is closed to come back
// with its cursor and a reset, and each shard forgets its position, in
// order with the batches it has yet to dispatch (an empty batch says so).
func (h *Hub) newEpoch(epoch string) {
	h.opts.Logger.Warn("hub: the event log was replaced; disconnecting every client so that they resume with a reset",
		"old", h.epoch, "new", epoch)
	h.epoch = epoch
	h.newest.Store(&epoch)
	if h.tail != nil {
		h.tail.reset()
	}
	for _, s := range h.shards {
		select {
		case s.in <- nil:
		case <-h.done:
			return
		}
	}
	h.failAll(ErrEpochChanged)
}

// failAll fails every client with err. The clients are collected first:
// failing one takes Client.mu, which is above h.mu in the lock order.
func (h *Hub) failAll(err error) {
	h.mu.Lock()
	cs := make([]*Client, 0, len(h.clients))
	for _, c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.fail(err)
	}
}

func (h *Hub) dispatchLoop(s *shard) {
	defer h.wg.Done()
	for {
		select {
		case msgs := <-s.in:
			if msgs == nil {
				// A new log. A subscription's start (Client.Subscribe)
				// reads the two together under the write lock.
				s.mu.Lock()
				s.dispatched.Store(0)
				s.epoch = *h.newest.Load()
				s.mu.Unlock()
				continue
			}
			s.dispatch(msgs)
		case <-h.done:
			return
		}
	}
}

// dispatch enqueues each message for every matching client of the shard.
// Enqueueing never blocks: a client whose queue is full is marked slow and
// dropped by its transport.
func (s *shard) dispatch(msgs []*Message) {
	start := time.Now()
	direct := s.gate.allow(len(msgs), len(s.in), start)
	s.mu.RLock()
	var n, written int64
	for _, m := range msgs {
		s.scratch = s.idx.match(m.Topic, s.scratch[:0])
		for _, c := range s.scratch {
			if ok, w := c.deliverLive(m, direct); ok {
				n++
				if w {
					written++
				}
			}
		}
		s.dispatched.Store(m.seq)
	}
	s.mu.RUnlock()
	clear(s.scratch)
	s.delivered.Add(n)
	if written > 0 {
		s.direct.Add(written)
	}
	s.gate.account(start, time.Now())
}

// Publish validates and publishes drafts as one batch: all are appended in
// order, or none is. It returns the published messages with their cursors.
// It normalizes the drafts in place (default type, compacted data).
// Errors wrap ErrInvalidTopic, ErrInvalidType, ErrInvalidData or ErrClosed.
func (h *Hub) Publish(ctx context.Context, drafts ...Draft) ([]*Message, error) {
	if len(drafts) == 0 {
		return nil, nil
	}
	for i := range drafts {
		if err := drafts[i].Normalize(); err != nil {
			return nil, err
		}
	}
	if h.ctx.Err() != nil {
		return nil, ErrClosed
	}
	msgs, err := h.broker.Publish(ctx, drafts)
	if err != nil {
		h.publishErrors.Add(1)
		return nil, fmt.Errorf("failed to publish: %w", err)
	}
	n := len(msgs)
	for i := range drafts {
		if drafts[i].Dedupe != "" && msgs[i] == nil {
			n-- // a duplicate of an event appended before
		}
	}
	h.published.Add(int64(n))
	return msgs, nil
}

// History returns retained events of one exact topic: the newest limit
// events when after is empty, otherwise those after the cursor, oldest
// first. A cursor from another epoch or older than retention yields
// ErrHistoryGone; a malformed one ErrBadCursor.
func (h *Hub) History(ctx context.Context, topic, after string, limit int) ([]*Message, error) {
	if err := ValidateTopic(topic); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("failed to read history: limit %d must be positive", limit)
	}
	if after == "" {
		return h.latest(ctx, topic, limit)
	}
	cur, err := ParseCursor(after)
	if err != nil {
		return nil, err
	}
	b, err := h.broker.Bounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read history: %w", err)
	}
	if cur.Epoch != b.Epoch || cur.Seq+1 < b.First || cur.Seq > b.Last {
		return nil, ErrHistoryGone
	}
	// Joins and leaves are not history (a v1 reader sees none): read on
	// past them until the page is full or the log ends.
	var out []*Message
	for next := cur.Seq; ; {
		res, err := h.readHistory(ctx, ReadRequest{After: next, Patterns: []Pattern{{raw: topic}}, Limit: limit - len(out)})
		if err != nil {
			return nil, err
		}
		out = appendNotPresence(out, res.Messages)
		if len(out) == limit || !res.More || res.Next <= next {
			return out, nil
		}
		next = res.Next
	}
}

// latest is Broker.Latest without joins and leaves: it asks for more while
// they take room, up to a bound, and returns the newest limit others.
func (h *Hub) latest(ctx context.Context, topic string, limit int) ([]*Message, error) {
	n := limit
	for try := 0; ; try++ {
		msgs, err := h.broker.Latest(ctx, topic, n)
		if err != nil {
			return nil, err
		}
		out := appendNotPresence(nil, msgs)
		if len(out) >= limit || len(msgs) < n || try == 3 {
			return out[max(0, len(out)-limit):], nil
		}
		n *= 4
	}
}

// appendNotPresence appends the messages of msgs that are not joins or leaves.
func appendNotPresence(dst, msgs []*Message) []*Message {
	for _, m := range msgs {
		if !m.isPresence() {
			dst = append(dst, m)
		}
	}
	if dst == nil {
		dst = []*Message{}
	}
	return dst
}

// TopicInfo is one row of Topics.
type TopicInfo struct {
	Topic       string `json:"topic"`
	Subscribers int    `json:"subscribers"`
	Events      int    `json:"events"` // retained events (exact topics only)
}

// Topics lists every subscribed pattern (as written) with its subscriber
// count, and every topic with retained history, sorted by name.
func (h *Hub) Topics(ctx context.Context) ([]TopicInfo, error) {
	counts := h.localCounts()
	if cc, ok := h.broker.(ClusterCounter); ok {
		if all, err := cc.ClusterSubscribers(ctx); err == nil {
			counts = all
		} else {
			h.opts.Logger.Warn("hub: failed to read the cluster's subscriber counts; showing this node's", "err", err)
		}
	}
	retained, err := h.broker.Topics(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list topics: %w", err)
	}
	rows := make(map[string]*TopicInfo, len(counts)+len(retained))
	for p, n := range counts {
		rows[p] = &TopicInfo{Topic: p, Subscribers: n}
	}
	for _, t := range retained {
		if r := rows[t.Topic]; r != nil {
			r.Events = t.Events
		} else {
			rows[t.Topic] = &TopicInfo{Topic: t.Topic, Events: t.Events}
		}
	}
	out := make([]TopicInfo, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// localCounts returns this node's subscribers per pattern.
func (h *Hub) localCounts() map[string]int {
	counts := make(map[string]int)
	for _, s := range h.shards {
		s.mu.RLock()
		s.idx.counts(counts)
		s.mu.RUnlock()
	}
	return counts
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Published     int64            `json:"published"`      // events accepted by Publish on this node
	PublishErrors int64            `json:"publish_errors"` // Publish calls the broker failed
	Delivered     int64            `json:"delivered"`      // events enqueued to clients
	Dropped       int64            `json:"dropped"`        // queued events discarded when their client ended before writing them
	Conflated     int64            `json:"conflated"`      // queued events a later one of the same topic and key replaced (SubscribeRequest.Conflate)
	SlowKicked    int64            `json:"slow_consumers"` // clients disconnected as slow consumers
	Clients       map[string]int64 `json:"clients"`        // open clients per transport
	Connects      map[string]int64 `json:"connects"`       // clients ever opened, per transport
	// Disconnects counts ended clients per transport and reason (the
	// Label of DisconnectOf the client's error).
	Disconnects map[string]map[string]int64 `json:"disconnects"`
	// QueueBytes is what the open clients' outbound queues hold, in all;
	// QueueBytesMax the largest of them.
	QueueBytes    int64 `json:"queue_bytes"`
	QueueBytesMax int64 `json:"queue_bytes_max"`
	// PresenceRefused counts joins refused: the hub's queue of joins was
	// full, or the topic had its most members.
	PresenceRefused int64 `json:"presence_refused"`
	// PresenceErrors counts batches of joins and leaves the broker failed
	// (each retried).
	PresenceErrors int64 `json:"presence_errors"`
	// DirectWrites counts the deliveries the dispatchers wrote to idle
	// connections themselves rather than queue for their writers
	// (DirectWriter); they are counted in Delivered too.
	DirectWrites int64 `json:"direct_writes"`
	// ReplayPages counts the pages replays (catch-ups after a resume)
	// read, by where from: "tail" (Options.TailBytes) or "broker".
	ReplayPages map[string]int64 `json:"replay_pages"`
	// Broker holds the broker's own counts, if it keeps any.
	Broker *BrokerStats `json:"broker,omitempty"`
}

// BrokerStats are a broker's delivery failures and recoveries.
type BrokerStats struct {
	Errors     int64 `json:"errors"`     // failed reads of the log (each retried)
	Reconnects int64 `json:"reconnects"` // deliveries resumed after a failure
}

// BrokerCounter is implemented by brokers that count their failures.
type BrokerCounter interface {
	BrokerStats() BrokerStats
}

// Stats returns current counters. It visits every open client for the
// queue sizes: cheap enough for a scrape every few seconds, not for a
// tight loop.
func (h *Hub) Stats() Stats {
	st := Stats{
		Published: h.published.Load(), PublishErrors: h.publishErrors.Load(),
		SlowKicked: h.kicked.Load(), Dropped: h.dropped.Load(), Conflated: h.conflated.Load(), PresenceRefused: h.pres.refused.Load(), PresenceErrors: h.pres.failed.Load(),
		Clients: map[string]int64{}, Connects: map[string]int64{}, Disconnects: map[string]map[string]int64{},
		ReplayPages: map[string]int64{"tail": h.replayTail.Load(), "broker": h.replayBroker.Load()},
	}
	for _, s := range h.shards {
		st.Delivered += s.delivered.Load()
		st.DirectWrites += s.direct.Load()
	}
	h.mu.Lock()
	for k, n := range h.kinds {
		st.Clients[k] = n
	}
	for k, n := range h.connects {
		st.Connects[k] = n
	}
	for d, n := range h.disconnects {
		if st.Disconnects[d.kind] == nil {
			st.Disconnects[d.kind] = map[string]int64{}
		}
		st.Disconnects[d.kind][d.reason] = n
	}
	clients := make([]*Client, 0, len(h.clients))
	for _, c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	// Client.mu comes before Hub.mu in the lock order: the queues are read
	// after letting go of the hub's lock.
	for _, c := range clients {
		c.mu.Lock()
		q := int64(c.qbytes)
		c.mu.Unlock()
		st.QueueBytes += q
		st.QueueBytesMax = max(st.QueueBytesMax, q)
	}
	if bc, ok := h.broker.(BrokerCounter); ok {
		bs := bc.BrokerStats()
		st.Broker = &bs
	}
	return st
}

// Bounds returns the bounds of the broker's log: it retains about
// Last - First + 1 events.
func (h *Hub) Bounds(ctx context.Context) (Bounds, error) { return h.broker.Bounds(ctx) }

// Ready reports whether the hub accepts work and its broker is reachable.
func (h *Hub) Ready(ctx context.Context) error {
	if h.closing.Load() {
		return ErrGoingAway
	}
	return h.broker.Ping(ctx)
}

// Epoch returns the current epoch of the broker's log ("" if the broker
// cannot be reached), for building cursors such as "EPOCH-0", the position
// before the first event.
func (h *Hub) Epoch() string {
	b, err := h.broker.Bounds(h.ctx)
	if err != nil {
		return ""
	}
	return b.Epoch
}

// Shutdown refuses new clients and disconnects every open one with
// ErrGoingAway, leaving Publish working so in-flight requests can finish.
// Transports see the reason in End.Closed (Client.Serve) and close their
// connections.
func (h *Hub) Shutdown() {
	h.closing.Store(true)
	h.failAll(ErrGoingAway)
}

// Close shuts the hub down: every client is disconnected, the broker is
// closed and every goroutine the hub started has ended when it returns,
// or ctx expired first.
func (h *Hub) Close(ctx context.Context) error {
	h.Shutdown()
	h.cancel()
	// The members still open leave before the broker closes.
	h.leaveAll()
	pctx, pcancel := context.WithTimeout(ctx, presenceWait)
	h.pres.close(pctx)
	pcancel()
	var err error
	h.closed.Do(func() {
		err = h.broker.Close()
		close(h.done)
	})
	waited := make(chan struct{})
	go func() { h.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		return fmt.Errorf("failed to stop hub goroutines: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("failed to close broker: %w", err)
	}
	return nil
}

// NewClient registers a subscriber connection of the given transport kind
// ("sse", "ws", …). The caller owns it and must Close it.
func (h *Hub) NewClient(kind string) (*Client, error) {
	if h.closing.Load() {
		return nil, ErrGoingAway
	}
	id := h.nextID.Add(1)
	ctx, cancel := context.WithCancel(h.ctx)
	c := &Client{
		hub:    h,
		id:     id,
		ctx:    ctx,
		cancel: cancel,
		subs:   make(map[string]*sub),
		wake:   make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
	}
	h.mu.Lock()
	k := slices.Index(h.kindNames, kind)
	if k < 0 {
		if len(h.kindNames) > math.MaxUint8 {
			h.mu.Unlock()
			cancel()
			return nil, fmt.Errorf("hub: too many transport kinds (%q)", kind)
		}
		k = len(h.kindNames)
		h.kindNames = append(h.kindNames, kind)
	}
	c.kind = uint8(k)
	h.clients[id] = c
	h.kinds[kind]++
	h.connects[kind]++
	h.mu.Unlock()
	if h.closing.Load() {
		// Shutdown may have snapshotted the clients before this one joined.
		c.fail(ErrGoingAway)
	}
	return c, nil
}

func (h *Hub) forget(c *Client) {
	c.mu.Lock()
	reason := DisconnectOf(c.err).Label
	c.mu.Unlock()
	h.mu.Lock()
	if h.clients[c.id] == c {
		delete(h.clients, c.id)
		h.unnameLocked(c)
		kind := h.kindNames[c.kind]
		h.kinds[kind]--
		h.disconnects[disconnectKey{kind, reason}]++
	}
	h.mu.Unlock()
}

// disconnectKey keys the disconnect counts.
type disconnectKey struct{ kind, reason string }

// DefaultHistoryReads is the default Options.HistoryReads: well under the
// connections a broker client keeps (go-redis: 10 per core), and enough
// pages at once to read history faster than connections can take it.
const DefaultHistoryReads = 8

// readReplay reads a page of a replay that must reach until (or the end
// of the log, math.MaxUint64): from the tail if it holds the page, else
// from the broker (readHistory). A tail ends at this node's delivery,
// which is the end of a replay that goes on live (Client.scan) but not
// necessarily until.
func (h *Hub) readReplay(ctx context.Context, req ReadRequest, until uint64) (ReadResult, error) {
	if h.tail != nil {
		if res, ok := h.tail.read(req); ok && (until == math.MaxUint64 || res.More || res.Next >= until) {
			h.replayTail.Add(1)
			return res, nil
		}
	}
	h.replayBroker.Add(1)
	return h.readHistory(ctx, req)
}

// readHistory is broker.Read for replays, rewinds and history pages, at
// most Options.HistoryReads at once. It waits for its turn until ctx ends.
func (h *Hub) readHistory(ctx context.Context, req ReadRequest) (ReadResult, error) {
	select {
	case h.reads <- struct{}{}:
	case <-ctx.Done():
		return ReadResult{}, ctx.Err()
	}
	defer func() { <-h.reads }()
	return h.broker.Read(ctx, req)
}
