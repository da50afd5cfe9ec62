package redisbroker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// stateScript is the part of publishScript that keeps the state: the
// functions stateDel and stateSet, over KEYS[6] (every topic's keys by
// position), KEYS[7] (the state's byte count), KEYS[8] (the set of topics
// that have a state), KEYS[9] (that set's version, bumped whenever a topic
// joins or leaves it, which is how a read of several topics knows it read
// all of them) and ARGV[6..8] (the prefix of the per-topic keys and the
// bounds).
//
// The per-topic keys are named in the script, not in KEYS: the byte bound
// drops the oldest key of whichever topic holds it, which the caller cannot
// know in advance. They share the hash tag of the others, so they live in
// the same Redis Cluster slot, which is what Cluster needs of a script's
// keys; only the declaration is missing. The reads (stateReadScript) name
// every key they touch in KEYS.
//
// The orders are lazy: a key's score in its topic's sorted set and in
// KEYS[6] is the position it had when it was first written or last
// re-scored, which is at most its real position (the seq its value starts
// with), because a new value of a known key, the common write, leaves both
// scores alone. stateOldest finds the least recently written key by taking
// the lowest score and re-scoring it if it is stale, until the lowest
// score is a real position: that key is then the oldest, since every other
// key's real position is at least its score. Each re-score makes one
// stale score real, and a score goes stale only by an update of its key
// (at most once per update), so the re-scores of all publishes together
// are at most the updates before them: amortized O(1) per keyed event.
// One eviction re-scores at most stateRepairMax stale scores, so that one
// publish never holds Redis for long after a run of updates without
// evictions; past that it takes the lowest score as it is, a key written
// later than the oldest (the order is then approximate, until the scores
// before it are repaired by the evictions that follow).
//
// stateOver(n) tells whether n is over the byte bound. A number with fewer
// digits than the bound is below it, which spares parsing the bound
// (strtod, a sizeable part of a keyed event's cost) on most writes.
//
// An update that keeps a value's size neither counts bytes nor looks at
// the byte bound: the state was within the bound after the write before
// (a bound lowered across a restart takes effect with the next write that
// adds bytes).
var stateScript = `
local function stateDel(topic, key)
  local h = ARGV[6] .. 'h:' .. topic
  local len = redis.call('HSTRLEN', h, key)
  if len == 0 then return end
  redis.call('HDEL', h, key)
  if redis.call('HLEN', h) == 0 then
    redis.call('SREM', KEYS[8], topic)
    redis.call('INCR', KEYS[9])
  end
  redis.call('ZREM', ARGV[6] .. 'z:' .. topic, key)
  redis.call('ZREM', KEYS[6], topic .. '\n' .. key)
  redis.call('DECRBY', KEYS[7], len + #topic + #key + ` + stateOverhead + `)
end
local function stateOldest(z, topic)
  for i = 0, ` + strconv.Itoa(stateRepairMax) + ` do
    local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if #r == 0 then return nil end
    local t, key = topic, r[1]
    if not t then
      local nl = string.find(r[1], '\n', 1, true)
      t, key = string.sub(r[1], 1, nl - 1), string.sub(r[1], nl + 1)
    end
    local v = redis.call('HGET', ARGV[6] .. 'h:' .. t, key)
    if not v then
      redis.call('ZREM', z, r[1])
    else
      local seq = tonumber(string.match(v, '^%d+'))
      if seq == tonumber(r[2]) or i == ` + strconv.Itoa(stateRepairMax) + ` then return t, key end
      redis.call('ZADD', z, seq, r[1])
    end
  end
  return nil
end
local function stateOver(n)
  return n >= 10 ^ (#ARGV[8] - 1) and n > tonumber(ARGV[8])
end
local function stateSet(topic, key, value, remove, seq)
  local size = #value + #topic + #key + ` + stateOverhead + `
  if remove or stateOver(size) then
    stateDel(topic, key)
    return
  end
  local h = ARGV[6] .. 'h:' .. topic
  local old = redis.call('HSTRLEN', h, key)
  redis.call('HSET', h, key, value)
  local total
  if old > 0 then
    if old == #value then return end
    total = redis.call('INCRBY', KEYS[7], #value - old)
  else
    local z = ARGV[6] .. 'z:' .. topic
    redis.call('ZADD', z, seq, key)
    redis.call('ZADD', KEYS[6], seq, topic .. '\n' .. key)
    total = redis.call('INCRBY', KEYS[7], size)
    if redis.call('SADD', KEYS[8], topic) == 1 then
      redis.call('INCR', KEYS[9])
    end
    if redis.call('ZCARD', z) > tonumber(ARGV[7]) then
      local t, k = stateOldest(z, topic)
      if t then stateDel(t, k) end
      total = tonumber(redis.call('GET', KEYS[7]))
    end
  end
  while stateOver(total) do
    local t, k = stateOldest(KEYS[6], nil)
    if not t then break end
    stateDel(t, k)
    total = tonumber(redis.call('GET', KEYS[7]))
  end
end
`

// stateRepairMax bounds the stale scores one eviction re-scores (see
// stateScript): a few hundred Redis commands, well under a millisecond.
const stateRepairMax = 256

// stateOverhead is what a key of the state counts against StateMaxBytes
// besides its topic, key, type and data.
const stateOverhead = "64"

// stateTopicsScript returns the version of the set of topics that have a
// state (KEYS[2]) and the set (KEYS[1]).
var stateTopicsScript = redis.NewScript(`
return {redis.call('GET', KEYS[2]) or '0', redis.call('SMEMBERS', KEYS[1])}
`)

// stateReadScript returns the epoch (KEYS[1]), the last position (KEYS[2])
// and the state of each topic of KEYS[4..] (HGETALL) at once, so that the
// state is exact at that position. With ARGV[1] set, it first checks that
// the version of the set of state topics (KEYS[3]) is still ARGV[1], and
// returns 0 if it is not: a topic may have joined the set since the caller
// chose which topics to read.
var stateReadScript = redis.NewScript(`
if ARGV[1] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then
  return 0
end
local out = {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
for i = 4, #KEYS do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
end
return out
`)

// stateReadTries bounds the reads of a wildcard's state while topics join
// or leave the set of state topics under it.
const stateReadTries = 8

// State implements hub.Broker. Literal patterns name their topics; a
// wildcard is matched here against the set of topics that have a state,
// and the read of those topics checks that the set has not changed since
// (else it is read again, stateReadTries times at most).
func (b *Broker) State(ctx context.Context, patterns []hub.Pattern) (hub.StateSnapshot, error) {
	if b.closed.Load() {
		return hub.StateSnapshot{}, hub.ErrClosed
	}
	if len(patterns) == 0 {
		return hub.StateSnapshot{Events: []*hub.Message{}}, nil
	}
	wild := slices.ContainsFunc(patterns, func(p hub.Pattern) bool { return !p.Literal() })
	for range stateReadTries {
		var topics []string
		version := ""
		if wild {
			res, err := stateTopicsScript.Run(ctx, b.rdb, []string{b.stateKey + "topics", b.stateKey + "tv"}).Slice()
			if err != nil {
				return hub.StateSnapshot{}, fmt.Errorf("failed to read state topics from Redis: %w", b.fail(err))
			}
			if len(res) != 2 {
				return hub.StateSnapshot{}, fmt.Errorf("failed to read state topics from Redis: unexpected reply %v", res)
			}
			version, _ = res[0].(string)
			members, _ := res[1].([]any)
			for _, m := range members {
				t, _ := m.(string)
				if slices.ContainsFunc(patterns, func(p hub.Pattern) bool { return p.Match(t) }) {
					topics = append(topics, t)
				}
			}
		} else {
			for _, p := range patterns {
				if !slices.Contains(topics, p.String()) {
					topics = append(topics, p.String())
				}
			}
		}
		st, ok, err := b.readState(ctx, topics, version)
		if err != nil || ok {
			return st, err
		}
	}
	return hub.StateSnapshot{}, hub.Unavailable(fmt.Errorf("failed to read state from Redis: its topics changed during %d reads", stateReadTries))
}

// readState reads the state of topics, exact at one position, if the
// version of the set of state topics is still version ("": unchecked). It
// reports false if it is not.
func (b *Broker) readState(ctx context.Context, topics []string, version string) (hub.StateSnapshot, bool, error) {
	keys := make([]string, 0, 3+len(topics))
	keys = append(keys, b.epochKey, b.seqKey, b.stateKey+"tv")
	for _, t := range topics {
		keys = append(keys, b.stateKey+"h:"+t)
	}
	v, err := stateReadScript.Run(ctx, b.rdb, keys, version).Result()
	if err != nil {
		return hub.StateSnapshot{}, false, fmt.Errorf("failed to read state from Redis: %w", b.fail(err))
	}
	res, ok := v.([]any)
	if !ok {
		return hub.StateSnapshot{}, false, nil // the set of topics changed
	}
	if len(res) != 2+len(topics) {
		return hub.StateSnapshot{}, false, fmt.Errorf("failed to read state from Redis: unexpected reply %v", res)
	}
	epoch, _ := res[0].(string)
	if epoch == "" {
		epoch = b.currentEpoch()
	}
	var last uint64
	if s, ok := res[1].(string); ok {
		if last, err = strconv.ParseUint(s, 10, 64); err != nil {
			return hub.StateSnapshot{}, false, fmt.Errorf("failed to read state from Redis: bad sequence %q", s)
		}
	}
	n := 0
	for _, r := range res[2:] {
		kv, _ := r.([]any)
		n += len(kv) / 2
	}
	out := hub.StateSnapshot{Last: hub.Cursor{Epoch: epoch, Seq: last}, Events: make([]*hub.Message, 0, n)}
	for i, r := range res[2:] {
		kv, _ := r.([]any)
		for j := 0; j+1 < len(kv); j += 2 {
			key, _ := kv[j].(string)
			v, _ := kv[j+1].(string)
			m, err := stateMessage(epoch, topics[i], key, v)
			if err != nil {
				return hub.StateSnapshot{}, false, fmt.Errorf("failed to read state from Redis: %w", err)
			}
			out.Events = append(out.Events, m)
		}
	}
	slices.SortFunc(out.Events, func(a, b *hub.Message) int { return cmp.Compare(a.ID.Seq, b.ID.Seq) })
	return out, true, nil
}

// stateMessage decodes a state entry, "seq micros type data".
func stateMessage(epoch, topic, key, v string) (*hub.Message, error) {
	f := strings.SplitN(v, " ", 4)
	if len(f) != 4 {
		return nil, fmt.Errorf("bad state entry %q", v)
	}
	seq, err1 := strconv.ParseUint(f[0], 10, 64)
	micros, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("bad state entry %q", v)
	}
	return hub.NewMessage(hub.Event{
		ID: hub.Cursor{Epoch: epoch, Seq: seq}, Topic: topic, Type: f[2], Key: key, Data: []byte(f[3]),
		Time: time.UnixMicro(micros).UTC(),
	}), nil
}
