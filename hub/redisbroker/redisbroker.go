// Package redisbroker is a hub.Broker on Redis: the event log of a cluster
// of Herald nodes, kept in one Redis stream (go-redis/v9).
//
// Keys, all under one hash tag so that they live in one Redis Cluster slot:
//
//	{prefix}:epoch  the log's epoch, set once (SET NX)
//	{prefix}:seq    the last sequence number given out
//	{prefix}:log    the stream; entry ID <seq>-0, fields t (topic), y (type),
//	                k (key, if any), d (data), m (time, Unix microseconds)
//	{prefix}:pub:<id>  the outcome of one group of publishes, kept for pubIDTTL
//	{prefix}:state:h:<topic>  the topic's state: key -> "seq micros type data"
//	{prefix}:state:z:<topic>  its keys by position (lazily: see stateScript)
//	{prefix}:state:order      every topic's keys ("topic\nkey") by position, lazily too
//	{prefix}:state:bytes      the state's size, counted as its bound counts it
//	{prefix}:pres:…, {prefix}:node:<node>  presence and the nodes' heartbeats (presence.go)
//
// A batch is appended by one Lua script (INCRBY, then XADD per event), so
// it is numbered consecutively in one order shared by every node, all or
// nothing. A node's concurrent publishes share one run of the script
// (group commit, committer.go). Each node delivers by reading the stream (XREAD BLOCK) from the
// last ID it delivered: in order, without gaps, and an event is in the
// stream before any node can read it. See docs/design.md and
// docs/cluster.md.
//
// A publish is never stored twice: the script remembers each group's ID
// with its outcome, so running it again (a retry of go-redis after a lost
// reply, or the broker's own, see confirm) returns the first outcome. A
// publish that fails while Redis is known to be failing was never sent
// (see Broker.down). A failure to reach Redis wraps
// hub.ErrUnavailable; a publish whose outcome could not be learnt in time
// returns hub.ErrUnconfirmed.
//
// A Broker is safe for concurrent use.
package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
)

// Options configures a Broker.
type Options struct {
	// Client is the connection to Redis. The Broker does not close it.
	Client redis.UniversalClient
	// Prefix names the keys ({Prefix}:log, …); nodes that share a Prefix
	// share a log. Default "herald".
	Prefix string
	// Size is the most events retained (approximately: Redis trims whole
	// stream nodes); default 10000. TTL, if set, also drops older events.
	Size int
	TTL  time.Duration
	// MaxBytes bounds the events retained by their size: each counts its
	// topic, type, key and data plus 64 bytes (Redis's own memory per entry is
	// somewhat more), and the oldest go first. Every publish trims to the
	// bound it is given, so nodes sharing a log should share MaxBytes.
	// Default hub.DefaultHistoryBytes.
	MaxBytes int
	// StateMaxKeys bounds the keys of one topic's state, StateMaxBytes the
	// state of every topic together (each key counted as its topic, key,
	// type and data plus 64 bytes); past them the least recently written
	// keys go first. Defaults hub.DefaultStateMaxKeys and
	// hub.DefaultStateMaxBytes.
	StateMaxKeys  int
	StateMaxBytes int
	// PresenceMaxMembers bounds the members of one topic; past it a join
	// is refused. Default hub.DefaultPresenceMaxMembers.
	PresenceMaxMembers int
	// NodeTTL is how long this node's heartbeat lives unrefreshed: the
	// members of a node whose heartbeat expired are made to leave by the
	// other nodes' sweepers, within about NodeTTL and a third of it.
	// Default 15 s.
	NodeTTL time.Duration
	// DedupeWindow is how long a hub.Draft.Dedupe key is remembered (a
	// key of its own in Redis, {Prefix}:dd:<key>, with that expiry: Redis
	// holds one per such event published within the window). Default
	// hub.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// Block is how long one XREAD waits for new events before the reader
	// checks the epoch again; default 2s.
	Block  time.Duration
	Logger *slog.Logger
}

// Broker is the Redis-backed hub.Broker.
type Broker struct {
	o                                  Options
	rdb                                redis.UniversalClient
	epochKey, seqKey, logKey, bytesKey string
	stateKey                           string // the prefix of the state's keys
	dedupeKey                          string // the prefix of the dedupe keys
	presKey                            string // the prefix of the presence keys
	epoch                              atomic.Pointer[string]
	publish                            *redis.Script
	ctx                                context.Context
	cancel                             context.CancelFunc
	done                               chan struct{} // closed when the reader has ended; nil before Start
	started, closed                    atomic.Bool
	trimMu                             sync.Mutex
	lastTrim                           time.Time

	node       string                // this node's ID among the counters
	countLocal func() map[string]int // set by CountSubscribers
	counting   sync.WaitGroup        // the counter goroutine
	nodes      sync.WaitGroup        // the heartbeat and sweeper goroutine (nodeLoop)
	halt       chan struct{}         // closed by a test to stop the heartbeat as a crash would
	paused     atomic.Bool           // set by a test to skip heartbeats, as a node cut off from Redis would
	revive     func()                // set by OnRevive

	control     func([]byte)   // set by OnControl
	skipped     func(uint64)   // set by OnSkip
	controlPS   *redis.PubSub  // the control channel's subscription; nil without control (control.go)
	controlling sync.WaitGroup // the goroutine that reads it

	readErrors, recoveries atomic.Int64 // of the reader: see BrokerStats

	commit     *groupcommit.Queue[*pending] // the publishes to append (committer.go)
	commitDone chan struct{}                // closed when the committer has ended
	pubSeq     atomic.Uint64                // numbers the committer's groups
	// down is set when a request failed to reach Redis and cleared when
	// one succeeds. While it is set, a publish first checks that Redis
	// answers, so that one that cannot reach it is refused before it is
	// sent (and surely not stored).
	down atomic.Bool
}

// New connects the broker to its log, creating the epoch if the log is new.
func New(ctx context.Context, o Options) (*Broker, error) {
	b, err := newBroker(ctx, o)
	if err != nil {
		return nil, err
	}
	// The committer runs from here, not from Start: a broker publishes
	// before it delivers, if its owner wants.
	go b.commitLoop()
	return b, nil
}

// newBroker is New without starting the committer.
func newBroker(ctx context.Context, o Options) (*Broker, error) {
	if o.Client == nil {
		return nil, errors.New("failed to start Redis broker: Options.Client is nil")
	}
	if o.Prefix == "" {
		o.Prefix = "herald"
	}
	if o.Size <= 0 {
		o.Size = 10000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = hub.DefaultHistoryBytes
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
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = hub.DefaultDedupeWindow
	}
	if o.Block <= 0 {
		o.Block = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	tag := "{" + o.Prefix + "}"
	b := &Broker{
		o: o, rdb: o.Client,
		epochKey: tag + ":epoch", seqKey: tag + ":seq", logKey: tag + ":log", bytesKey: tag + ":bytes",
		stateKey: tag + ":state:", presKey: tag + ":pres:", dedupeKey: tag + ":dd:", halt: make(chan struct{}),
		publish: publishScript,
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.node = hub.NewEpoch() // random enough to tell nodes apart
	if _, err := b.loadEpoch(ctx); err != nil {
		b.cancel()
		return nil, fmt.Errorf("failed to start Redis broker: %w", err)
	}
	b.commit, b.commitDone = groupcommit.NewQueue[*pending](queueLimit), make(chan struct{})
	return b, nil
}

// loadEpoch reads the log's epoch, creating it if the log is new (or Redis
// lost it).
func (b *Broker) loadEpoch(ctx context.Context) (string, error) {
	if err := b.rdb.SetNX(ctx, b.epochKey, hub.NewEpoch(), 0).Err(); err != nil {
		return "", err
	}
	e, err := b.rdb.Get(ctx, b.epochKey).Result()
	if err != nil {
		return "", err
	}
	b.epoch.Store(&e)
	return e, nil
}

func (b *Broker) currentEpoch() string { return *b.epoch.Load() }

// Start implements hub.Broker: it starts the reader, which delivers every
// event after the log's current end.
func (b *Broker) Start(deliver func([]*hub.Message)) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("failed to start Redis broker: already started")
	}
	bd, err := b.Bounds(b.ctx)
	if err != nil {
		return fmt.Errorf("failed to start Redis broker: %w", err)
	}
	b.done = make(chan struct{})
	go b.read(deliver, bd.Last)
	if b.countLocal != nil {
		b.counting.Add(1)
		go b.count()
	}
	// The heartbeat exists before any join of this node, so that no
	// sweeper takes the node for dead.
	if err := b.rdb.Set(b.ctx, b.heartbeatKey(b.node), "1", b.o.NodeTTL).Err(); err != nil {
		b.o.Logger.Warn("redis broker: failed to write the node's heartbeat", "err", err)
	}
	b.nodes.Add(1)
	go b.nodeLoop()
	if b.control != nil {
		b.subscribeControl()
	}
	return nil
}

// message turns a stream entry into a hub message.
func (b *Broker) message(xm redis.XMessage, epoch string) (*hub.Message, error) {
	seqStr, _, _ := strings.Cut(xm.ID, "-")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad entry ID %q", xm.ID)
	}
	field := func(k string) string { s, _ := xm.Values[k].(string); return s }
	micros, err := strconv.ParseInt(field("m"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad time %q", field("m"))
	}
	return hub.NewMessage(hub.Event{
		ID:    hub.Cursor{Epoch: epoch, Seq: seq},
		Topic: field("t"),
		Type:  field("y"),
		Key:   field("k"),
		Data:  []byte(field("d")),
		Time:  time.UnixMicro(micros).UTC(),
	}), nil
}

// Ping implements hub.Broker: Redis answers PING.
func (b *Broker) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return hub.ErrClosed
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("failed to reach Redis: %w", b.fail(err))
	}
	return nil
}

// Close implements hub.Broker: it stops the reader and the committer and
// waits for them, so deliver is not called after Close returns. A publish
// still queued fails with hub.ErrClosed; one in a group Redis may be
// running fails with hub.ErrUnconfirmed, as its outcome is unknown. The
// Redis client stays open.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	<-b.commitDone
	if b.done != nil {
		<-b.done
	}
	b.counting.Wait()
	b.nodes.Wait()
	if b.controlPS != nil {
		// Closing the subscription closes its channel, which ends the
		// goroutine that reads it.
		_ = b.controlPS.Close()
		b.controlling.Wait()
	}
	return nil
}
