package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
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

// publishScript appends a group of batches (see committer) in one step,
// in the group's order, each numbered consecutively and whole. KEYS are the sequence, the log, the epoch, the byte
// count, the group's outcome, and the state's order of writes, byte count,
// set of topics and that set's version. ARGV[1] is the retention by count,
// ARGV[2] the number of batches, ARGV[3] an epoch to set if the log has none
// (Redis lost it), ARGV[4] the retention in bytes, ARGV[5] how long to
// remember the outcome under KEYS[5] (ms), ARGV[6] the prefix of the
// state's keys per topic, ARGV[7] and ARGV[8] the state's bounds in keys
// per topic and in bytes, ARGV[9] how long to remember a dedupe key (ms;
// "0" when no event of the group has one), ARGV[10] the prefix of the
// dedupe keys, then for each batch its number of events followed by topic,
// type, key ("" for none), data and dedupe key ("" for none) of each.
//
// An event whose dedupe key is set already (by an earlier publish, or an
// earlier batch of the group) is skipped; the others of its batch are
// numbered and appended, and their keys set, in the same step. A keyed
// event updates its topic's state in the same script (see stateScript),
// which is what keeps a state snapshot exact.
//
// It returns the outcome as one string: the server time in microseconds,
// which is every event's time, the epoch, then per batch "first:mask",
// its first sequence number and which of its events were appended (""
// when all were, else one '1' or '0' per event). If KEYS[5] holds an
// outcome already, the group was appended before, and it returns that
// outcome without appending again.
//
// The byte bound: KEYS[4] counts the bytes ever appended (each event's
// topic, type, key and data plus entryOverhead), and each entry records in 'o'
// that count before it. The events retained are those whose 'o' is at least
// the count minus the bound, so the script drops older entries from the
// front, a page at a time (a bounded number of pages per call: what is
// left goes with the next one). An entry written before the byte bound
// existed has no 'o' and counts as old.
var publishScript = redis.NewScript(stateScript + trimScript + `
local done = redis.call('GET', KEYS[5])
if done then return done end
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[3])
local t = redis.call('TIME')
local micros = t[1] .. string.format('%06d', tonumber(t[2]))
local out = {micros, epoch}
local before = tonumber(redis.call('GET', KEYS[4]) or '0')
local total = before
local a = 11
for b = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local keep = n
  local mask = ''
  if ARGV[9] ~= '0' then
    local flags = {}
    for i = 0, n - 1 do
      local dk = ARGV[a + 4 + i * 5]
      if dk ~= '' and not redis.call('SET', ARGV[10] .. dk, '1', 'NX', 'PX', ARGV[9]) then
        flags[i + 1] = '0'
        keep = keep - 1
      else
        flags[i + 1] = '1'
      end
    end
    if keep < n then mask = table.concat(flags) end
  end
  local last = redis.call('INCRBY', KEYS[1], keep)
  local first = last - keep + 1
  local j = 0
  for i = 0, n - 1 do
    local e = a + i * 5
    if mask == '' or string.sub(mask, i + 1, i + 1) == '1' then
      local size = #ARGV[e] + #ARGV[e + 1] + #ARGV[e + 2] + #ARGV[e + 3] + ` + strconv.Itoa(entryOverhead) + `
      total = total + size
      local seq = tostring(first + j)
      j = j + 1
      local id = seq .. '-0'
      if ARGV[e + 2] == '' then
        redis.call('XADD', KEYS[2], id,
          't', ARGV[e], 'y', ARGV[e + 1], 'd', ARGV[e + 3], 'm', micros, 'o', total - size)
      else
        redis.call('XADD', KEYS[2], id,
          't', ARGV[e], 'y', ARGV[e + 1], 'k', ARGV[e + 2], 'd', ARGV[e + 3], 'm', micros, 'o', total - size)
        stateSet(ARGV[e], ARGV[e + 2], seq .. ' ' .. micros .. ' ' .. ARGV[e + 1] .. ' ' .. ARGV[e + 3], ARGV[e + 3] == 'null', seq)
      end
    end
  end
  out[#out + 1] = tostring(first) .. ':' .. mask
  a = a + n * 5
end
if total > before then
  redis.call('INCRBY', KEYS[4], total - before)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[1])
  trimBytes(total)
end
local res = table.concat(out, ' ')
redis.call('SET', KEYS[5], res, 'PX', ARGV[5])
return res
`)

// trimScript defines trimBytes(total), the byte bound's trim of the log
// (see publishScript), for the scripts that append: KEYS[2] is the log,
// ARGV[4] the bound, total the count of KEYS[4] after the append.
var trimScript = `
local function trimBytes(total)
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
end
`

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

// Publish implements hub.Broker: it hands the batch to the committer,
// which appends it with the other batches queued at the time in one run of
// publishScript, and waits for its outcome.
func (b *Broker) Publish(ctx context.Context, drafts []hub.Draft) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	p := &pending{drafts: drafts, deadline: time.Now().Add(confirmWait), done: make(chan pubResult, 1)}
	w := groupcommit.Weight{Events: len(drafts)} // and its bytes, as the queue's bounds count them
	for i := range drafts {
		d := &drafts[i]
		w.Bytes += len(d.Topic) + len(d.Type) + len(d.Key) + len(d.Data) + len(d.Dedupe) + entryOverhead
		if d.Dedupe != "" {
			p.dedupe = true
		}
	}
	ctx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to publish to Redis: %w", hub.Unavailable(err))
	}
	if err := b.commit.Put(ctx, p, w); err != nil {
		if errors.Is(err, hub.ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("failed to publish to Redis: %w", hub.Unavailable(err))
	}
	select {
	case r := <-p.done:
		return r.msgs, r.err
	case <-ctx.Done():
	}
	if p.Abandon() {
		// The committer had not taken it: it is not sent, ever.
		return nil, fmt.Errorf("failed to publish to Redis: %w", hub.Unavailable(ctx.Err()))
	}
	select {
	case r := <-p.done:
		return r.msgs, r.err
	default:
		return nil, fmt.Errorf("failed to publish to Redis: %w: %v", hub.ErrUnconfirmed, ctx.Err())
	}
}

// commitGroup appends a group of batches taken from the queue with one run
// of publishScript under one ID, and answers each batch's publisher with
// its messages or the group's error. It is called by the committer alone.
func (b *Broker) commitGroup(group []*pending) {
	if group = expire(group); len(group) == 0 {
		return
	}
	// The group tries for as long as one of its publishers waits (Take
	// and expire left out those that no longer do): one near its end must not cut
	// the others' time short.
	var deadline time.Time
	total := 0
	window := int64(0)
	for _, p := range group {
		deadline = maxTime(deadline, p.deadline)
		total += len(p.drafts)
		if p.dedupe {
			window = b.o.DedupeWindow.Milliseconds()
		}
	}
	ctx, cancel := context.WithDeadline(b.ctx, deadline)
	defer cancel()
	args := make([]any, 0, 10+len(group)+5*total)
	args = append(args, b.o.Size, len(group), hub.NewEpoch(), b.o.MaxBytes, pubIDTTL.Milliseconds(),
		b.stateKey, b.o.StateMaxKeys, b.o.StateMaxBytes, window, b.dedupeKey)
	for _, p := range group {
		args = append(args, len(p.drafts))
		for _, d := range p.drafts {
			args = append(args, d.Topic, d.Type, d.Key, string(d.Data), d.Dedupe)
		}
	}
	id := b.node + "-" + strconv.FormatUint(b.pubSeq.Add(1), 36)
	keys := []string{b.seqKey, b.logKey, b.epochKey, b.bytesKey, "{" + b.o.Prefix + "}:pub:" + id,
		b.stateKey + "order", b.stateKey + "bytes", b.stateKey + "topics", b.stateKey + "tv"}
	res, err := b.appendGroup(ctx, keys, args)
	var out *outcome
	if err == nil {
		out, err = parseOutcome(res, group)
	}
	if err != nil {
		for _, p := range group {
			p.done <- pubResult{err: fmt.Errorf("failed to publish to Redis: %w", err)}
		}
		return
	}
	b.epoch.Store(&out.epoch)
	for i, p := range group {
		p.done <- pubResult{msgs: out.messages(i, p.drafts)}
	}
}

// expire answers the batches of group whose time is up, unsent (their
// publishers are giving up), and returns the others, in order, in
// group's array.
func expire(group []*pending) []*pending {
	now := time.Now()
	n := 0
	for _, p := range group {
		if !p.deadline.After(now) {
			p.done <- pubResult{err: fmt.Errorf("failed to publish to Redis: %w", hub.Unavailable(context.DeadlineExceeded))}
			continue
		}
		group[n] = p
		n++
	}
	return group[:n]
}

// appendGroup runs publishScript for a group, first checking that Redis
// answers if it was failing, and asking again (confirm) if the answer was
// lost.
func (b *Broker) appendGroup(ctx context.Context, keys []string, args []any) (string, error) {
	if b.down.Load() {
		if err := b.probe(ctx); err != nil {
			return "", err
		}
	}
	res, err := b.run(ctx, keys, args)
	if err != nil && b.unreachable(err) {
		res, err = b.confirm(ctx, keys, args, err)
	}
	if err != nil {
		return "", err
	}
	b.down.Store(false)
	return res, nil
}

// outcome is a group's outcome as publishScript returns it.
type outcome struct {
	when  time.Time
	epoch string
	first []uint64 // per batch
	masks []string // per batch: "" when every event was appended
}

// parseOutcome parses publishScript's answer for group.
func parseOutcome(res string, group []*pending) (*outcome, error) {
	f := strings.Split(res, " ")
	if len(f) != 2+len(group) {
		return nil, fmt.Errorf("unexpected reply %q", res)
	}
	micros, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || f[1] == "" {
		return nil, fmt.Errorf("unexpected reply %q", res)
	}
	out := &outcome{when: time.UnixMicro(micros).UTC(), epoch: f[1]}
	for i, p := range group {
		firstStr, mask, ok := strings.Cut(f[2+i], ":")
		first, err := strconv.ParseUint(firstStr, 10, 64)
		if !ok || err != nil || (mask != "" && len(mask) != len(p.drafts)) {
			return nil, fmt.Errorf("unexpected reply %q", res)
		}
		out.first = append(out.first, first)
		out.masks = append(out.masks, mask)
	}
	return out, nil
}

// messages returns the messages of batch i of the group, drafted as
// drafts: nil in place of a draft skipped as a duplicate.
func (o *outcome) messages(i int, drafts []hub.Draft) []*hub.Message {
	msgs := make([]*hub.Message, len(drafts))
	seq, mask := o.first[i], o.masks[i]
	for j, d := range drafts {
		if mask != "" && mask[j] == '0' {
			continue // appended before: a duplicate
		}
		msgs[j] = hub.NewMessage(hub.Event{
			ID: hub.Cursor{Epoch: o.epoch, Seq: seq}, Topic: d.Topic, Type: d.Type, Key: d.Key, Data: d.Data, Time: o.when,
		})
		seq++
	}
	return msgs
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// confirm learns the outcome of a group whose script Redis may have run
// although its answer was lost (err): it runs the script again with the
// same group ID, which appends the group if the first run did not and
// returns the first run's outcome if it did, until Redis answers or ctx
// ends. Then the outcome is unknown: hub.ErrUnconfirmed.
func (b *Broker) confirm(ctx context.Context, keys []string, args []any, err error) (string, error) {
	backoff := 20 * time.Millisecond
	for {
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %v", hub.ErrUnconfirmed, err)
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
func (b *Broker) run(ctx context.Context, keys []string, args []any) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptWait)
	defer cancel()
	return b.publish.Run(ctx, b.rdb, keys, args...).Text()
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
