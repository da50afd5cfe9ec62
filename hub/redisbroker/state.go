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
// position), KEYS[7] (the state's byte count) and ARGV[6..8] (the prefix of
// the per-topic keys and the bounds). The per-topic keys are named in the
// script, not in KEYS: they share the hash tag of the others, so they live
// in the same Redis Cluster slot.
const stateScript = `
local function stateDel(topic, key)
  local h = ARGV[6] .. 'h:' .. topic
  local len = redis.call('HSTRLEN', h, key)
  if len == 0 then return end
  redis.call('HDEL', h, key)
  redis.call('ZREM', ARGV[6] .. 'z:' .. topic, key)
  redis.call('ZREM', KEYS[6], topic .. '\n' .. key)
  redis.call('DECRBY', KEYS[7], len + #topic + #key + ` + stateOverhead + `)
end
local function stateSet(topic, key, value, remove, seq)
  stateDel(topic, key)
  local size = #value + #topic + #key + ` + stateOverhead + `
  if remove or size > tonumber(ARGV[8]) then return end
  local z = ARGV[6] .. 'z:' .. topic
  redis.call('HSET', ARGV[6] .. 'h:' .. topic, key, value)
  redis.call('ZADD', z, seq, key)
  redis.call('ZADD', KEYS[6], seq, topic .. '\n' .. key)
  local total = redis.call('INCRBY', KEYS[7], size)
  if redis.call('ZCARD', z) > tonumber(ARGV[7]) then
    stateDel(topic, redis.call('ZRANGE', z, 0, 0)[1])
    total = tonumber(redis.call('GET', KEYS[7]))
  end
  while total > tonumber(ARGV[8]) do
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0)[1]
    local nl = string.find(oldest, '\n', 1, true)
    stateDel(string.sub(oldest, 1, nl - 1), string.sub(oldest, nl + 1))
    total = tonumber(redis.call('GET', KEYS[7]))
  end
end
`

// stateOverhead is what a key of the state counts against StateMaxBytes
// besides its topic, key, type and data.
const stateOverhead = "64"

// stateReadScript returns the epoch, the last position and a topic's state
// (HGETALL) at once, so that the state is exact at that position.
var stateReadScript = redis.NewScript(`
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[3])}
`)

// State implements hub.Broker.
func (b *Broker) State(ctx context.Context, topic string) (hub.StateSnapshot, error) {
	if b.closed.Load() {
		return hub.StateSnapshot{}, hub.ErrClosed
	}
	res, err := stateReadScript.Run(ctx, b.rdb, []string{b.epochKey, b.seqKey, b.stateKey + "h:" + topic}).Slice()
	if err != nil {
		return hub.StateSnapshot{}, fmt.Errorf("failed to read state from Redis: %w", b.fail(err))
	}
	if len(res) != 3 {
		return hub.StateSnapshot{}, fmt.Errorf("failed to read state from Redis: unexpected reply %v", res)
	}
	epoch, _ := res[0].(string)
	if epoch == "" {
		epoch = b.currentEpoch()
	}
	var last uint64
	if s, ok := res[1].(string); ok {
		if last, err = strconv.ParseUint(s, 10, 64); err != nil {
			return hub.StateSnapshot{}, fmt.Errorf("failed to read state from Redis: bad sequence %q", s)
		}
	}
	kv, _ := res[2].([]any)
	out := hub.StateSnapshot{Last: hub.Cursor{Epoch: epoch, Seq: last}, Events: make([]*hub.Message, 0, len(kv)/2)}
	for i := 0; i+1 < len(kv); i += 2 {
		key, _ := kv[i].(string)
		v, _ := kv[i+1].(string)
		m, err := stateMessage(epoch, topic, key, v)
		if err != nil {
			return hub.StateSnapshot{}, fmt.Errorf("failed to read state from Redis: %w", err)
		}
		out.Events = append(out.Events, m)
	}
	slices.SortFunc(out.Events, func(a, b *hub.Message) int { return cmp.Compare(a.ID.Seq, b.ID.Seq) })
	return out, nil
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
