package redisbroker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// Presence keys, beside the log's and under its hash tag:
//
//	{prefix}:pres:h:<topic>  the topic's members: connection ID -> "seq node member"
//	{prefix}:pres:n:<node>   the members a node has, "topic\nclient"
//	{prefix}:pres:nodes      the nodes that have (or had) members
//	{prefix}:node:<node>     the node's heartbeat, which expires unless refreshed
//	{prefix}:pres:s:<node>   members of the node that sweeps made leave, for a rejoin
//
// The script that appends a join or a leave also writes these, so that a
// snapshot read with the log's last position is exact at it.

// DefaultNodeTTL is the default Options.NodeTTL: with a sweep every third
// of it, the members of a node that died leave within about 20 s.
const DefaultNodeTTL = 15 * time.Second

// appendLua defines appendEvent, which appends one event (the next
// sequence number, the byte count as publishScript keeps it) and returns
// its sequence number and the byte count after it; over KEYS[1] (the
// sequence), KEYS[2] (the log), KEYS[4] (the byte count) and ARGV[1] (the
// retention by count).
var appendLua = `
local function appendEvent(topic, typ, key, data, micros)
  local seq = redis.call('INCR', KEYS[1])
  local size = #topic + #typ + #key + #data + ` + strconv.Itoa(entryOverhead) + `
  local total = redis.call('INCRBY', KEYS[4], size)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0',
    't', topic, 'y', typ, 'k', key, 'd', data, 'm', micros, 'o', total - size)
  return seq, total
end
local function now()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
-- leave appends the leave of client from topic if it is a member, and
-- forgets it; it returns the event's sequence number and the member.
local function leave(P, topic, client, micros)
  local h = P .. 'h:' .. topic
  local v = redis.call('HGET', h, client)
  if not v then return nil end
  local seq, node, member = string.match(v, '^(%d+) (%S+) (.*)$')
  redis.call('HDEL', h, client)
  redis.call('SREM', P .. 'n:' .. node, topic .. '\n' .. client)
  local s, total = appendEvent(topic, '` + hub.TypeLeave + `', client, member, micros)
  return s, total, member
end
`

// presenceScript applies joins and leaves. KEYS are the sequence, the log,
// the epoch and the byte count (as for publishScript). ARGV[1] is the
// retention by count, ARGV[3] an epoch to set if the log has none, ARGV[4]
// the retention in bytes, ARGV[5] the prefix of the presence keys, ARGV[6]
// the bound of members per topic, ARGV[7] this node, ARGV[8] the number of
// changes, then kind ("j" join, "r" rejoin, "l" leave), topic, client and
// member of each. A join of a member, of a full topic, a rejoin of a
// member no sweep took, or a leave of a non-member appends nothing.
// It returns the epoch, the time, and for each event appended its sequence
// number, the index of its change (from 0) and its data.
var presenceScript = redis.NewScript(trimScript + appendLua + `
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[3])
local P = ARGV[5]
local maxm = tonumber(ARGV[6])
local node = ARGV[7]
local micros = now()
local out = {epoch, micros}
local total = nil
for i = 0, tonumber(ARGV[8]) - 1 do
  local a = 9 + i * 4
  local kind, topic, client, member = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if kind == 'r' then
    -- A rejoin: the member as a sweeper took it, if it did.
    local swept = P .. 's:' .. node
    member = redis.call('HGET', swept, topic .. '\n' .. client)
    if member then redis.call('HDEL', swept, topic .. '\n' .. client) end
  end
  if kind ~= 'l' and member then
    local h = P .. 'h:' .. topic
    if redis.call('HEXISTS', h, client) == 0 and redis.call('HLEN', h) < maxm then
      local seq
      seq, total = appendEvent(topic, '` + hub.TypeJoin + `', client, member, micros)
      redis.call('HSET', h, client, seq .. ' ' .. node .. ' ' .. member)
      redis.call('SADD', P .. 'n:' .. node, topic .. '\n' .. client)
      redis.call('SADD', P .. 'nodes', node)
      table.insert(out, seq) table.insert(out, i) table.insert(out, member)
    end
  elseif kind == 'l' then
    local seq, t, m = leave(P, topic, client, micros)
    if seq then
      total = t
      table.insert(out, seq) table.insert(out, i) table.insert(out, m)
    end
  end
end
if total then trimBytes(total) end
return out
`)

// sweepScript makes up to ARGV[8] members of a dead node leave, keeping
// each (topic\nclient -> member) in {prefix}:pres:s:<node> for ARGV[9] ms
// for a rejoin. KEYS and ARGV[1..5] are as for presenceScript; ARGV[6] is
// the dead node, ARGV[7] its heartbeat key. A node whose heartbeat exists is alive: nothing
// happens. Each member leaves only if it still is one, so two sweepers
// never make one leave twice. It returns the number of members left to
// sweep, then the events as presenceScript does (with the time first).
var sweepScript = redis.NewScript(trimScript + appendLua + `
if redis.call('EXISTS', ARGV[7]) == 1 then return {0} end
local P = ARGV[5]
local node = ARGV[6]
local set = P .. 'n:' .. node
local micros = now()
local total = nil
local out = {0, micros}
local members = redis.call('SRANDMEMBER', set, tonumber(ARGV[8]))
for _, e in ipairs(members) do
  local nl = string.find(e, '\n', 1, true)
  local topic, client = string.sub(e, 1, nl - 1), string.sub(e, nl + 1)
  local seq, t, m = leave(P, topic, client, micros)
  redis.call('SREM', set, e)
  if seq then
    -- Kept for a while: a node taken for dead while alive joins its
    -- members again with what they joined with (a rejoin).
    redis.call('HSET', P .. 's:' .. node, e, m)
    redis.call('PEXPIRE', P .. 's:' .. node, ARGV[9])
    total = t
    table.insert(out, seq) table.insert(out, topic) table.insert(out, client) table.insert(out, m)
  end
end
out[1] = redis.call('SCARD', set)
if out[1] == 0 then redis.call('SREM', P .. 'nodes', node) end
if total then trimBytes(total) end
return out
`)

// NodeID implements hub.NodeBroker: the hub names its connections after
// it, and the presence script indexes their memberships under it.
func (b *Broker) NodeID() string { return b.node }

func (b *Broker) heartbeatKey(node string) string { return "{" + b.o.Prefix + "}:node:" + node }

// ChangePresence implements hub.Broker.
func (b *Broker) ChangePresence(ctx context.Context, changes []hub.PresenceChange) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	if len(changes) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	args := make([]any, 0, 8+4*len(changes))
	args = append(args, b.o.Size, 0, hub.NewEpoch(), b.o.MaxBytes, b.presKey, b.o.PresenceMaxMembers, b.node, len(changes))
	for _, ch := range changes {
		kind := "l"
		switch {
		case ch.Join && ch.Member == nil:
			kind = "r"
		case ch.Join:
			kind = "j"
		}
		args = append(args, kind, ch.Topic, ch.Client, string(ch.Member))
	}
	res, err := presenceScript.Run(ctx, b.rdb, b.appendKeys(), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("failed to change presence in Redis: %w", b.fail(err))
	}
	if len(res) < 2 || (len(res)-2)%3 != 0 {
		return nil, fmt.Errorf("failed to change presence in Redis: unexpected reply %v", res)
	}
	epoch, _ := res[0].(string)
	when, err := replyTime(res[1])
	if err != nil {
		return nil, fmt.Errorf("failed to change presence in Redis: %w", err)
	}
	b.epoch.Store(&epoch)
	msgs := make([]*hub.Message, 0, (len(res)-2)/3)
	for i := 2; i < len(res); i += 3 {
		seq, ok1 := res[i].(int64)
		idx, ok2 := res[i+1].(int64)
		data, ok3 := res[i+2].(string)
		if !ok1 || !ok2 || !ok3 || idx < 0 || int(idx) >= len(changes) {
			return nil, fmt.Errorf("failed to change presence in Redis: unexpected reply %v", res)
		}
		ch := changes[idx]
		typ := hub.TypeLeave
		if ch.Join {
			typ = hub.TypeJoin
		}
		msgs = append(msgs, hub.NewMessage(hub.Event{
			ID: hub.Cursor{Epoch: epoch, Seq: uint64(seq)}, Topic: ch.Topic, Type: typ, Key: ch.Client, Data: []byte(data), Time: when,
		}))
	}
	return msgs, nil
}

// appendKeys are the KEYS of the scripts that append.
func (b *Broker) appendKeys() []string { return []string{b.seqKey, b.logKey, b.epochKey, b.bytesKey} }

// replyTime decodes a script's time, Unix microseconds as text.
func replyTime(v any) (time.Time, error) {
	s, _ := v.(string)
	micros, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %v", v)
	}
	return time.UnixMicro(micros).UTC(), nil
}

// Presence implements hub.Broker.
func (b *Broker) Presence(ctx context.Context, topic string) (hub.PresenceSnapshot, error) {
	if b.closed.Load() {
		return hub.PresenceSnapshot{}, hub.ErrClosed
	}
	// One transaction, not a script: MULTI/EXEC is as atomic, and spares
	// Lua a table of every member.
	var epochCmd, seqCmd *redis.StringCmd
	var membersCmd *redis.MapStringStringCmd
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epochCmd = p.Get(ctx, b.epochKey)
		seqCmd = p.Get(ctx, b.seqKey)
		membersCmd = p.HGetAll(ctx, b.presKey+"h:"+topic)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return hub.PresenceSnapshot{}, fmt.Errorf("failed to read presence from Redis: %w", b.fail(err))
	}
	epoch := epochCmd.Val()
	if epoch == "" {
		epoch = b.currentEpoch()
	}
	var last uint64
	if s := seqCmd.Val(); s != "" {
		if last, err = strconv.ParseUint(s, 10, 64); err != nil {
			return hub.PresenceSnapshot{}, fmt.Errorf("failed to read presence from Redis: bad sequence %q", s)
		}
	}
	kv := membersCmd.Val()
	type member struct {
		seq  uint64
		data json.RawMessage
	}
	ms := make([]member, 0, len(kv))
	for _, v := range kv {
		// "seq node member"
		seqText, rest, ok1 := strings.Cut(v, " ")
		_, data, ok2 := strings.Cut(rest, " ")
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if !ok1 || !ok2 || err != nil {
			return hub.PresenceSnapshot{}, fmt.Errorf("failed to read presence from Redis: bad member %q", v)
		}
		ms = append(ms, member{seq, json.RawMessage(data)})
	}
	slices.SortFunc(ms, func(a, b member) int { return cmp.Compare(a.seq, b.seq) })
	out := hub.PresenceSnapshot{Last: hub.Cursor{Epoch: epoch, Seq: last}, Members: make([]json.RawMessage, len(ms))}
	for i, m := range ms {
		out.Members[i] = m.data
	}
	return out, nil
}

// sweepBatch bounds the members one run of sweepScript makes leave.
const sweepBatch = 500

// sweptTTL is how long the members a sweep made leave are kept for their
// node to join them again if it was alive after all (Broker.OnRevive).
const sweptTTL = time.Hour

// nodeLoop is the node's presence goroutine, from Start to Close: every
// third of NodeTTL it refreshes the node's heartbeat and, while it holds
// the sweep lease (sweeplease.go), sweeps the members of nodes whose
// heartbeat expired. At Close the heartbeat and the lease are deleted; the
// hub has made this node's members leave by then.
func (b *Broker) nodeLoop() {
	defer b.nodes.Done()
	t := time.NewTicker(b.o.NodeTTL / 3)
	defer t.Stop()
	for {
		if !b.paused.Load() {
			b.beat()
			lead, err := b.lead(b.ctx)
			if err == nil && lead {
				err = b.sweep(b.ctx)
			}
			if err != nil && b.ctx.Err() == nil {
				b.o.Logger.Warn("redis broker: failed to sweep the members of dead nodes", "err", err)
			}
		}
		select {
		case <-t.C:
		case <-b.halt:
			return // a test's simulated crash: no clean-up
		case <-b.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.rdb.Del(ctx, b.heartbeatKey(b.node))
			b.resign(ctx)
			cancel()
			return
		}
	}
}

// beat refreshes the node's heartbeat. Start wrote it, so finding it gone
// means it expired: the node could not refresh it for NodeTTL (cut off
// from Redis, or paused), and other nodes may have made its members leave.
// The heartbeat is back before the rejoin is asked for, so no sweep runs
// after it.
func (b *Broker) beat() {
	var exists *redis.IntCmd
	_, err := b.rdb.TxPipelined(b.ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(b.ctx, b.heartbeatKey(b.node))
		p.Set(b.ctx, b.heartbeatKey(b.node), "1", b.o.NodeTTL)
		return nil
	})
	switch {
	case err != nil && b.ctx.Err() == nil:
		b.o.Logger.Warn("redis broker: failed to refresh the node's heartbeat", "err", err)
	case err == nil && exists.Val() == 0:
		b.o.Logger.Warn("redis broker: this node's heartbeat had expired; other nodes may have made its members leave: joining them again",
			"node", b.node, "ttl", b.o.NodeTTL)
		if b.revive != nil {
			b.revive()
		}
	}
}

// OnRevive implements hub.NodeReviver: f is called, from the broker's
// heartbeat goroutine, when the node finds its heartbeat expired although
// it is alive. The hub then rejoins its members (a PresenceChange with Join
// and no Member), which brings back each one a sweeper made leave, with
// its member as it joined. Call it before Start.
func (b *Broker) OnRevive(f func()) { b.revive = f }

// sweep makes the members of every node whose heartbeat expired leave.
// The events reach every node through the log, as any.
func (b *Broker) sweep(ctx context.Context) error {
	nodes, err := b.rdb.SMembers(ctx, b.presKey+"nodes").Result()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n == b.node {
			continue
		}
		for ctx.Err() == nil {
			res, err := sweepScript.Run(ctx, b.rdb, b.appendKeys(),
				b.o.Size, 0, hub.NewEpoch(), b.o.MaxBytes, b.presKey, n, b.heartbeatKey(n), sweepBatch, sweptTTL.Milliseconds()).Slice()
			if err != nil {
				return err
			}
			left, _ := res[0].(int64)
			if len(res) > 2 {
				b.o.Logger.Info("redis broker: members of a dead node left", "node", n, "members", (len(res)-2)/4)
			}
			if left == 0 {
				break
			}
		}
	}
	return nil
}
