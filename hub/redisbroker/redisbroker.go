// Package redisbroker is a hub.Broker on Redis: the event log of a cluster
// of Herald nodes, kept in one Redis stream (go-redis/v9).
//
// Keys, all under one hash tag so that they live in one Redis Cluster slot:
//
//	{prefix}:epoch  the log's epoch, set once (SET NX)
//	{prefix}:seq    the last sequence number given out
//	{prefix}:log    the stream; entry ID <seq>-0, fields t (topic), y (type),
//	                d (data), m (time, Unix microseconds)
//	{prefix}:pub:<id>  the outcome of one publish, kept for pubIDTTL
//
// A batch is appended by one Lua script (INCRBY, then XADD per event), so
// it is numbered consecutively in one order shared by every node, all or
// nothing. Each node delivers by reading the stream (XREAD BLOCK) from the
// last ID it delivered: in order, without gaps, and an event is in the
// stream before any node can read it. See docs/design.md and
// docs/cluster.md.
//
// A publish is never stored twice: the script remembers each publish's ID
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
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
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
	// topic, type and data plus 64 bytes (Redis's own memory per entry is
	// somewhat more), and the oldest go first. Every publish trims to the
	// bound it is given, so nodes sharing a log should share MaxBytes.
	// Default hub.DefaultHistoryBytes.
	MaxBytes int
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

	readErrors, recoveries atomic.Int64 // of the reader: see BrokerStats

	pubSeq atomic.Uint64 // numbers this node's publish IDs
	// down is set when a request failed to reach Redis and cleared when
	// one succeeds. While it is set, a publish first checks that Redis
	// answers, so that one that cannot reach it is refused before it is
	// sent (and surely not stored).
	down atomic.Bool
}

// BrokerStats implements hub.BrokerCounter: failed reads of the log, and
// the times reading worked again after failing.
func (b *Broker) BrokerStats() hub.BrokerStats {
	return hub.BrokerStats{Errors: b.readErrors.Load(), Reconnects: b.recoveries.Load()}
}

// Subscriber counts: each node writes its own to a hash that expires
// unless refreshed, and GET /v1/topics sums the hashes of the live nodes.
// A count is at most countEvery old, and a node that died drops out of the
// sum within countTTL.
const (
	countEvery = 5 * time.Second
	countTTL   = 3 * countEvery
)

// How long a publish may take, how long one attempt may wait for Redis's
// answer, and how long Redis remembers the outcome: longer, so that every
// attempt within confirmWait finds it.
const (
	confirmWait = 5 * time.Second
	attemptWait = 2 * time.Second
	pubIDTTL    = 3 * confirmWait
	// probeWait bounds the PING of a publish while Redis was failing.
	probeWait = time.Second
)

// publishScript appends a batch. KEYS are the sequence, the log, the epoch,
// the byte count and the publish's outcome. ARGV[1] is the retention by
// count, ARGV[2] the number of events, ARGV[3] an epoch to set if the log
// has none (Redis lost it), ARGV[4] the retention in bytes, ARGV[5] how
// long to remember the outcome under KEYS[5] (ms), then topic, type and
// data of each. It returns the first sequence number, the server time,
// which is every event's time, and the epoch; if KEYS[5] holds an outcome
// already, the batch was appended before, and it returns that outcome
// without appending again.
//
// The byte bound: KEYS[4] counts the bytes ever appended (each event's
// topic, type and data plus entryOverhead), and each entry records in 'o'
// that count before it. The events retained are those whose 'o' is at least
// the count minus the bound, so the script drops older entries from the
// front, a page at a time (a bounded number of pages per publish: what is
// left goes with the next one). An entry written before the byte bound
// existed has no 'o' and counts as old.
var publishScript = redis.NewScript(`
local done = redis.call('GET', KEYS[5])
if done then
  local first, micros, epoch = string.match(done, '^(%d+) (%d+) (.+)$')
  return {tonumber(first), micros, epoch}
end
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[3])
local n = tonumber(ARGV[2])
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local t = redis.call('TIME')
local micros = t[1] .. string.format('%06d', tonumber(t[2]))
local total = 0
for i = 0, n - 1 do
  local a = 6 + i * 3
  local size = #ARGV[a] + #ARGV[a + 1] + #ARGV[a + 2] + ` + strconv.Itoa(entryOverhead) + `
  total = redis.call('INCRBY', KEYS[4], size)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], (first + i) .. '-0',
    't', ARGV[a], 'y', ARGV[a + 1], 'd', ARGV[a + 2], 'm', micros, 'o', total - size)
end
local cutoff = total - tonumber(ARGV[4])
local count = 1
for page = 1, ` + strconv.Itoa(trimPages) + ` do
  if cutoff <= 0 then break end
  local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', count)
  count = math.min(count * 4, 100)
  if #entries == 0 then break end
  local keep = nil
  for _, e in ipairs(entries) do
    local f = e[2]
    local o = nil
    for j = 1, #f, 2 do
      if f[j] == 'o' then o = tonumber(f[j + 1]) end
    end
    if o ~= nil and o >= cutoff then keep = e[1] break end
  end
  if keep ~= nil then
    redis.call('XTRIM', KEYS[2], 'MINID', keep)
    break
  end
  local seq = string.match(entries[#entries][1], '^(%d+)')
  redis.call('XTRIM', KEYS[2], 'MINID', (tonumber(seq) + 1) .. '-0')
end
redis.call('SET', KEYS[5], first .. ' ' .. micros .. ' ' .. epoch, 'PX', ARGV[5])
return {first, micros, epoch}
`)

// entryOverhead is what an event counts against Options.MaxBytes besides
// its topic, type and data: its ID and other fields, roughly.
const entryOverhead = 64

// trimPages bounds the pages one publish drops for the byte bound, so that
// the script stays short however much is over it. The first page is one
// entry and each next one four times larger, up to 100: once the log has
// held its bound's worth of bytes, every publish looks at the oldest entry,
// and XRANGE copies whole entries, so the usual look (the oldest is kept,
// or is the one to drop) reads one entry, not a page.
const trimPages = 10

// New connects the broker to its log, creating the epoch if the log is new.
func New(ctx context.Context, o Options) (*Broker, error) {
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
		publish: publishScript,
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.node = hub.NewEpoch() // random enough to tell nodes apart
	if _, err := b.loadEpoch(ctx); err != nil {
		b.cancel()
		return nil, fmt.Errorf("failed to start Redis broker: %w", err)
	}
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
	return nil
}

// read is the reader goroutine: XREAD from the last delivered ID, deliver,
// repeat, until Close. Connection errors are retried with a capped backoff;
// a reconnect resumes from the last ID, so nothing is skipped.
//
// If Redis lost the log (a restart without persistence), new events start
// again at 1 under a new epoch, and XREAD from the old last ID would skip
// or wait for them. So the reader checks the epoch after every failure and
// whenever it is idle, and starts over at 1 when it changed; clients whose
// cursors are of the old epoch then get a reset.
func (b *Broker) read(deliver func([]*hub.Message), last uint64) {
	defer close(b.done)
	epoch := b.currentEpoch()
	backoff := 50 * time.Millisecond
	recheck, failing := false, false
	for b.ctx.Err() == nil {
		if recheck {
			e, err := b.loadEpoch(b.ctx)
			if err != nil {
				if !b.sleep(&backoff) {
					return
				}
				continue
			}
			recheck = false
			if e != epoch {
				b.o.Logger.Warn("redis broker: the log was lost and started afresh (new epoch); clients resume with a reset",
					"epoch", e)
				epoch, last = e, 0
			}
		}
		res, err := b.rdb.XRead(b.ctx, &redis.XReadArgs{
			Streams: []string{b.logKey, strconv.FormatUint(last, 10) + "-0"},
			Count:   512,
			Block:   b.o.Block,
		}).Result()
		if failing && (err == nil || errors.Is(err, redis.Nil)) {
			failing = false
			b.recoveries.Add(1)
			b.o.Logger.Info("redis broker: reading the log again")
		}
		switch {
		case b.ctx.Err() != nil:
			return
		case errors.Is(err, redis.Nil):
			recheck = true // idle: a good moment to look
			continue
		case err != nil:
			b.unreachable(err) // publishes check before they send
			b.o.Logger.Warn("redis broker: reading the log failed; retrying", "err", err, "in", backoff)
			b.readErrors.Add(1)
			recheck, failing = true, true
			if !b.sleep(&backoff) {
				return
			}
			continue
		}
		backoff = 50 * time.Millisecond
		for _, st := range res {
			msgs := make([]*hub.Message, 0, len(st.Messages))
			for _, xm := range st.Messages {
				m, err := b.message(xm, epoch)
				if err != nil {
					b.o.Logger.Error("redis broker: skipping an unreadable log entry", "id", xm.ID, "err", err)
					continue
				}
				if m.ID.Seq != last+1 && last != 0 {
					// The entries in between were trimmed before this node
					// read them: it fell more than the retention behind.
					b.o.Logger.Error("redis broker: events were trimmed before this node delivered them",
						"from", last+1, "to", m.ID.Seq-1)
				}
				last = m.ID.Seq
				msgs = append(msgs, m)
			}
			if len(msgs) > 0 && b.ctx.Err() == nil {
				deliver(msgs)
			}
		}
	}
}

// sleep waits out the backoff, doubling it up to 2 s; false if the broker
// closed meanwhile.
func (b *Broker) sleep(backoff *time.Duration) bool {
	select {
	case <-time.After(*backoff):
	case <-b.ctx.Done():
		return false
	}
	*backoff = min(2**backoff, 2*time.Second)
	return true
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
		Data:  []byte(field("d")),
		Time:  time.UnixMicro(micros).UTC(),
	}), nil
}

// Publish implements hub.Broker.
func (b *Broker) Publish(ctx context.Context, drafts []hub.Draft) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	args := make([]any, 0, 5+3*len(drafts))
	args = append(args, b.o.Size, len(drafts), hub.NewEpoch(), b.o.MaxBytes, pubIDTTL.Milliseconds())
	for _, d := range drafts {
		args = append(args, d.Topic, d.Type, string(d.Data))
	}
	id := b.node + "-" + strconv.FormatUint(b.pubSeq.Add(1), 36)
	keys := []string{b.seqKey, b.logKey, b.epochKey, b.bytesKey, "{" + b.o.Prefix + "}:pub:" + id}
	if b.down.Load() {
		if err := b.probe(ctx); err != nil {
			return nil, fmt.Errorf("failed to publish to Redis: %w", err)
		}
	}
	res, err := b.run(ctx, keys, args)
	if err != nil && b.unreachable(err) {
		res, err = b.confirm(ctx, keys, args, err)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to publish to Redis: %w", err)
	}
	b.down.Store(false)
	if len(res) != 3 {
		return nil, fmt.Errorf("failed to publish to Redis: unexpected reply %v", res)
	}
	first, ok1 := res[0].(int64)
	microsStr, ok2 := res[1].(string)
	epoch, ok3 := res[2].(string)
	micros, err := strconv.ParseInt(microsStr, 10, 64)
	if !ok1 || !ok2 || !ok3 || err != nil {
		return nil, fmt.Errorf("failed to publish to Redis: unexpected reply %v", res)
	}
	b.epoch.Store(&epoch)
	when := time.UnixMicro(micros).UTC()
	msgs := make([]*hub.Message, len(drafts))
	for i, d := range drafts {
		msgs[i] = hub.NewMessage(hub.Event{
			ID: hub.Cursor{Epoch: epoch, Seq: uint64(first) + uint64(i)}, Topic: d.Topic, Type: d.Type, Data: d.Data, Time: when,
		})
	}
	return msgs, nil
}

// confirm learns the outcome of a publish whose script Redis may have run
// although its answer was lost (err): it runs the script again with the
// same publish ID, which appends the batch if the first run did not and
// returns the first run's outcome if it did, until Redis answers or ctx
// ends. Then the outcome is unknown: hub.ErrUnconfirmed.
func (b *Broker) confirm(ctx context.Context, keys []string, args []any, err error) ([]any, error) {
	backoff := 20 * time.Millisecond
	for {
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", hub.ErrUnconfirmed, err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
		if b.probe(ctx) != nil {
			continue // still unreachable
		}
		res, rerr := b.run(ctx, keys, args)
		if rerr == nil || !b.unreachable(rerr) {
			return res, rerr
		}
		err = rerr
	}
}

// run runs the publish script once, waiting at most attemptWait for the
// answer (when the client honours deadlines: ContextTimeoutEnabled),
// so that a lost answer leaves time to ask again.
func (b *Broker) run(ctx context.Context, keys []string, args []any) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptWait)
	defer cancel()
	return b.publish.Run(ctx, b.rdb, keys, args...).Slice()
}

// probe checks that Redis answers, within probeWait.
func (b *Broker) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return b.fail(err)
	}
	b.down.Store(false)
	return nil
}

// transientReplies begin Redis's refusals that mean "not now" (loading,
// failing over, busy, full): the command did not run, and may later.
var transientReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "max number of clients"}

// unreachable reports whether err is a failure to reach Redis, rather
// than Redis's answer (or a bug), and notes it for the next publish.
func (b *Broker) unreachable(err error) bool {
	var reply redis.Error
	if errors.As(err, &reply) {
		for _, p := range transientReplies {
			if redis.HasErrorPrefix(err, p) {
				b.down.Store(true)
				return true
			}
		}
		return false
	}
	if hub.IsConnFailure(err) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) {
		b.down.Store(true)
		return true
	}
	return false
}

// fail marks err as hub.ErrUnavailable if it is a failure to reach Redis.
func (b *Broker) fail(err error) error {
	if b.unreachable(err) {
		return hub.Unavailable(err)
	}
	return err
}

// Read implements hub.Broker.
func (b *Broker) Read(ctx context.Context, req hub.ReadRequest) (hub.ReadResult, error) {
	if req.Limit <= 0 {
		return hub.ReadResult{}, fmt.Errorf("failed to read history: limit %d must be positive", req.Limit)
	}
	if b.closed.Load() {
		return hub.ReadResult{}, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	res := hub.ReadResult{Next: req.After}
	from, scanned := req.After+1, 0
	// lastSeen is the log's end as read after an empty page, 0 before.
	// The publish script numbers and appends in one step, so every event
	// up to it is in the stream unless trimmed; reading it after the
	// page, though, may count an event appended in between.
	var lastSeen uint64
	for {
		page := 256
		if req.MaxScan > 0 {
			page = min(page, req.MaxScan-scanned)
		}
		entries, err := b.rdb.XRangeN(ctx, b.logKey, strconv.FormatUint(from, 10)+"-0", "+", int64(page)).Result()
		if err != nil {
			return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		if len(entries) == 0 {
			if scanned == 0 {
				// Nothing from After on: the end of the log, or all of it
				// was trimmed. Which one is known only from an end read
				// before the page: read it, and look again.
				if lastSeen > req.After {
					return hub.ReadResult{}, hub.ErrHistoryGone
				}
				last, err := b.lastSeq(ctx)
				if err != nil {
					return hub.ReadResult{}, err
				}
				if req.After < last {
					lastSeen = last
					continue
				}
			}
			return res, nil
		}
		for _, xm := range entries {
			m, err := b.message(xm, b.currentEpoch())
			if err != nil {
				return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
			}
			if scanned == 0 && m.ID.Seq != req.After+1 {
				return hub.ReadResult{}, hub.ErrHistoryGone // trimmed up to m
			}
			if len(res.Messages) == req.Limit || (req.MaxScan > 0 && scanned == req.MaxScan) {
				res.More = true
				return res, nil
			}
			scanned++
			res.Next = m.ID.Seq
			for _, p := range req.Patterns {
				if p.Match(m.Topic) {
					res.Messages = append(res.Messages, m)
					break
				}
			}
		}
		from = res.Next + 1
		if len(entries) < page {
			return res, nil
		}
		if req.MaxScan > 0 && scanned == req.MaxScan || len(res.Messages) == req.Limit {
			// Whether more follow is known only by looking: one entry.
			more, err := b.rdb.XRangeN(ctx, b.logKey, strconv.FormatUint(from, 10)+"-0", "+", 1).Result()
			if err != nil {
				return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
			}
			res.More = len(more) > 0
			return res, nil
		}
	}
}

func (b *Broker) lastSeq(ctx context.Context) (uint64, error) {
	s, err := b.rdb.Get(ctx, b.seqKey).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failed to read the log's end from Redis: %w", b.fail(err))
	}
	return s, nil
}

// Latest implements hub.Broker.
func (b *Broker) Latest(ctx context.Context, topic string, limit int) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	var out []*hub.Message
	end := "+"
	for len(out) < limit {
		entries, err := b.rdb.XRevRangeN(ctx, b.logKey, end, "-", 256).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		for _, xm := range entries {
			m, err := b.message(xm, b.currentEpoch())
			if err != nil {
				return nil, err
			}
			if m.Topic == topic {
				out = append(out, m)
				if len(out) == limit {
					break
				}
			}
			end = "(" + xm.ID
		}
		if len(entries) < 256 {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Bounds implements hub.Broker.
func (b *Broker) Bounds(ctx context.Context) (hub.Bounds, error) {
	if b.closed.Load() {
		return hub.Bounds{}, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	pipe := b.rdb.Pipeline()
	epoch := pipe.Get(ctx, b.epochKey)
	seq := pipe.Get(ctx, b.seqKey)
	first := pipe.XRangeN(ctx, b.logKey, "-", "+", 1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return hub.Bounds{}, fmt.Errorf("failed to read the log's bounds from Redis: %w", b.fail(err))
	}
	last, err := seq.Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return hub.Bounds{}, fmt.Errorf("failed to read the log's end from Redis: %w", b.fail(err))
	}
	if e, err := epoch.Result(); err == nil {
		b.epoch.Store(&e)
	} else if e, err := b.loadEpoch(ctx); err == nil { // Redis lost it
		b.epoch.Store(&e)
	}
	bd := hub.Bounds{Epoch: b.currentEpoch(), First: last + 1, Last: last}
	if entries := first.Val(); len(entries) > 0 {
		m, err := b.message(entries[0], b.currentEpoch())
		if err != nil {
			return hub.Bounds{}, err
		}
		bd.First = m.ID.Seq
	}
	return bd, nil
}

// Topics implements hub.Broker. It reads the whole retained log: the
// endpoint that asks is for people, and the log is bounded by Size.
func (b *Broker) Topics(ctx context.Context) ([]hub.TopicHistory, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	counts := map[string]int{}
	from := "-"
	for {
		entries, err := b.rdb.XRangeN(ctx, b.logKey, from, "+", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		for _, xm := range entries {
			t, _ := xm.Values["t"].(string)
			counts[t]++
			from = "(" + xm.ID
		}
		if len(entries) < 1000 {
			break
		}
	}
	out := make([]hub.TopicHistory, 0, len(counts))
	for t, n := range counts {
		out = append(out, hub.TopicHistory{Topic: t, Events: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// maybeTrim drops events older than TTL, at most every TTL/4 (and 1 s) per
// node. Stream IDs are sequence numbers, not times, so it finds the first
// young entry by its time field and trims below it; every node may do it,
// and trimming twice is harmless. Failures are left to the next call.
func (b *Broker) maybeTrim(ctx context.Context) {
	if b.o.TTL <= 0 {
		return
	}
	b.trimMu.Lock()
	defer b.trimMu.Unlock()
	now := time.Now()
	if now.Sub(b.lastTrim) < min(b.o.TTL/4, time.Second) {
		return
	}
	b.lastTrim = now
	t, err := b.rdb.Time(ctx).Result()
	if err != nil {
		return
	}
	cutoff := t.Add(-b.o.TTL).UnixMicro()
	for {
		entries, err := b.rdb.XRangeN(ctx, b.logKey, "-", "+", 100).Result()
		if err != nil || len(entries) == 0 {
			return
		}
		keep := ""
		for _, xm := range entries {
			m, _ := xm.Values["m"].(string)
			if micros, err := strconv.ParseInt(m, 10, 64); err == nil && micros >= cutoff {
				keep = xm.ID
				break
			}
		}
		if keep == "" {
			// All 100 are old: drop them and look again.
			last := entries[len(entries)-1].ID
			seqStr, _, _ := strings.Cut(last, "-")
			seq, _ := strconv.ParseUint(seqStr, 10, 64)
			keep = strconv.FormatUint(seq+1, 10) + "-0"
			if err := b.rdb.XTrimMinID(ctx, b.logKey, keep).Err(); err != nil {
				return
			}
			continue
		}
		_ = b.rdb.XTrimMinID(ctx, b.logKey, keep).Err()
		return
	}
}

// CountSubscribers implements hub.ClusterCounter: from Start on, this
// node's counts are written every countEvery.
func (b *Broker) CountSubscribers(local func() map[string]int) { b.countLocal = local }

func (b *Broker) countsKey(node string) string { return "{" + b.o.Prefix + "}:subs:" + node }

// writeCounts replaces this node's hash with its current counts.
func (b *Broker) writeCounts(ctx context.Context) error {
	key := b.countsKey(b.node)
	counts := b.countLocal()
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(counts) > 0 {
			vals := make([]any, 0, 2*len(counts))
			for pat, n := range counts {
				vals = append(vals, pat, n)
			}
			p.HSet(ctx, key, vals...)
			p.Expire(ctx, key, countTTL)
		}
		return nil
	})
	return err
}

func (b *Broker) count() {
	defer b.counting.Done()
	t := time.NewTicker(countEvery)
	defer t.Stop()
	for {
		_ = b.writeCounts(b.ctx) // a failure shows as a stale count
		select {
		case <-t.C:
		case <-b.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.rdb.Del(ctx, b.countsKey(b.node)) // leave the sum at once
			cancel()
			return
		}
	}
}

// ClusterSubscribers implements hub.ClusterCounter. It refreshes this
// node's counts first, so that they are exact in the sum.
func (b *Broker) ClusterSubscribers(ctx context.Context) (map[string]int, error) {
	if b.countLocal != nil {
		if err := b.writeCounts(ctx); err != nil {
			return nil, fmt.Errorf("failed to write subscriber counts to Redis: %w", b.fail(err))
		}
	}
	sum := map[string]int{}
	iter := b.rdb.Scan(ctx, 0, b.countsKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		vals, err := b.rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read subscriber counts from Redis: %w", b.fail(err))
		}
		for pat, v := range vals {
			n, _ := strconv.Atoi(v)
			sum[pat] += n
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("failed to read subscriber counts from Redis: %w", b.fail(err))
	}
	return sum, nil
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

// Close implements hub.Broker: it stops the reader and waits for it, so
// deliver is not called after Close returns. The Redis client stays open.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	if b.done != nil {
		<-b.done
	}
	b.counting.Wait()
	return nil
}
