package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
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
// the byte count, the publish's outcome, and the state's order of writes,
// byte count, set of topics and that set's version. ARGV[1] is the retention by count, ARGV[2] the number of
// events, ARGV[3] an epoch to set if the log has none (Redis lost it),
// ARGV[4] the retention in bytes, ARGV[5] how long to remember the outcome
// under KEYS[5] (ms), ARGV[6] the prefix of the state's keys per topic,
// ARGV[7] and ARGV[8] the state's bounds in keys per topic and in bytes,
// ARGV[9] how long to remember a dedupe key (ms; "0" when no event has
// one), ARGV[10] the prefix of the dedupe keys, then topic, type, key (""
// for none), data and dedupe key ("" for none) of each. An event whose
// dedupe key is set already is skipped; the others are numbered and
// appended, and their keys set, in the same step. A keyed event
// updates its topic's state in the same script (see stateScript), which is
// what keeps a state snapshot exact. It returns the first sequence number, the server time,
// which is every event's time, the epoch and which events were appended
// ("" when all were, else one '1' or '0' per event); if KEYS[5] holds an outcome
// already, the batch was appended before, and it returns that outcome
// without appending again.
//
// The byte bound: KEYS[4] counts the bytes ever appended (each event's
// topic, type, key and data plus entryOverhead), and each entry records in 'o'
// that count before it. The events retained are those whose 'o' is at least
// the count minus the bound, so the script drops older entries from the
// front, a page at a time (a bounded number of pages per publish: what is
// left goes with the next one). An entry written before the byte bound
// existed has no 'o' and counts as old.
var publishScript = redis.NewScript(stateScript + trimScript + `
local done = redis.call('GET', KEYS[5])
if done then
  local first, micros, epoch, mask = string.match(done, '^(%d+) (%d+) (%S+) ?(.*)$')
  return {tonumber(first), micros, epoch, mask}
end
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[3])
local n = tonumber(ARGV[2])
local keep = n
local mask = ''
if ARGV[9] ~= '0' then
  local flags = {}
  for i = 0, n - 1 do
    local dk = ARGV[15 + i * 5]
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
local t = redis.call('TIME')
local micros = t[1] .. string.format('%06d', tonumber(t[2]))
local total = 0
local j = 0
for i = 0, n - 1 do
  local a = 11 + i * 5
  if mask == '' or string.sub(mask, i + 1, i + 1) == '1' then
    local size = #ARGV[a] + #ARGV[a + 1] + #ARGV[a + 2] + #ARGV[a + 3] + ` + strconv.Itoa(entryOverhead) + `
    total = redis.call('INCRBY', KEYS[4], size)
    local seq = tostring(first + j)
    j = j + 1
    local id = seq .. '-0'
    if ARGV[a + 2] == '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id,
        't', ARGV[a], 'y', ARGV[a + 1], 'd', ARGV[a + 3], 'm', micros, 'o', total - size)
    else
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id,
        't', ARGV[a], 'y', ARGV[a + 1], 'k', ARGV[a + 2], 'd', ARGV[a + 3], 'm', micros, 'o', total - size)
      stateSet(ARGV[a], ARGV[a + 2], seq .. ' ' .. micros .. ' ' .. ARGV[a + 1] .. ' ' .. ARGV[a + 3], ARGV[a + 3] == 'null', seq)
    end
  end
end
if total > 0 then trimBytes(total) end
redis.call('SET', KEYS[5], first .. ' ' .. micros .. ' ' .. epoch .. ' ' .. mask, 'PX', ARGV[5])
return {first, micros, epoch, mask}
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

// Publish implements hub.Broker.
func (b *Broker) Publish(ctx context.Context, drafts []hub.Draft) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	window := int64(0)
	for i := range drafts {
		if drafts[i].Dedupe != "" {
			window = b.o.DedupeWindow.Milliseconds()
			break
		}
	}
	args := make([]any, 0, 10+5*len(drafts))
	args = append(args, b.o.Size, len(drafts), hub.NewEpoch(), b.o.MaxBytes, pubIDTTL.Milliseconds(),
		b.stateKey, b.o.StateMaxKeys, b.o.StateMaxBytes, window, b.dedupeKey)
	for _, d := range drafts {
		args = append(args, d.Topic, d.Type, d.Key, string(d.Data), d.Dedupe)
	}
	id := b.node + "-" + strconv.FormatUint(b.pubSeq.Add(1), 36)
	keys := []string{b.seqKey, b.logKey, b.epochKey, b.bytesKey, "{" + b.o.Prefix + "}:pub:" + id,
		b.stateKey + "order", b.stateKey + "bytes", b.stateKey + "topics", b.stateKey + "tv"}
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
	if len(res) != 4 {
		return nil, fmt.Errorf("failed to publish to Redis: unexpected reply %v", res)
	}
	first, ok1 := res[0].(int64)
	microsStr, ok2 := res[1].(string)
	epoch, ok3 := res[2].(string)
	mask, ok4 := res[3].(string)
	micros, err := strconv.ParseInt(microsStr, 10, 64)
	if !ok1 || !ok2 || !ok3 || !ok4 || err != nil || (mask != "" && len(mask) != len(drafts)) {
		return nil, fmt.Errorf("failed to publish to Redis: unexpected reply %v", res)
	}
	b.epoch.Store(&epoch)
	when := time.UnixMicro(micros).UTC()
	msgs := make([]*hub.Message, len(drafts))
	seq := uint64(first)
	for i, d := range drafts {
		if mask != "" && mask[i] == '0' {
			continue // appended before: a duplicate
		}
		msgs[i] = hub.NewMessage(hub.Event{
			ID: hub.Cursor{Epoch: epoch, Seq: seq}, Topic: d.Topic, Type: d.Type, Key: d.Key, Data: d.Data, Time: when,
		})
		seq++
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
