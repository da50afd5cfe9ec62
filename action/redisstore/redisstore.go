// Package redisstore is an action.Store on Redis (go-redis/v9): the queue
// and the records of the actions of a cluster of Herald nodes.
//
// Keys, under the same hash tag as the Redis broker's:
//
//	{prefix}:act:q        the queue: a stream of action IDs read by the
//	                      consumer group "workers"; an entry leaves it
//	                      (XACK + XDEL) when its action is done
//	{prefix}:act:r:<id>   the record: a hash with a (the action as JSON),
//	                      s (its status) and p ("1" once its result is
//	                      published); it expires TTL after the end
//	{prefix}:act:k:<hash> an idempotency key (hash of caller and key):
//	                      the action ID, expiring with the record
//
// A worker claims with XREADGROUP (the workers of a node waiting at once
// share one, with COUNT, and one pipelined read of the records: see
// action/internal/claimbatch); the pending entries list is the lease:
// a worker renews it by claiming its entry again (XCLAIM, which resets the
// idle time), and any node takes over an entry idle longer than the lease
// (XAUTOCLAIM). A Store is safe for concurrent use.
//
// Group commit: the scripts that write (Create, Save, Finish, Done) of a
// node's concurrent calls go to Redis together, pipelined in one round trip
// (internal/groupcommit); each script stays atomic on its own, and a lone
// call waits for one round trip as before.
//
// Goroutines: the group commit's committer is the only one a Store starts,
// and needs no Close: it runs while writes are queued and ends when the
// queue is empty. A group in flight ends at its deadline (writeTimeout if
// the client honours context deadlines, ContextTimeoutEnabled, as the
// server's does; otherwise the client's read timeout, for each of its
// retries of the pipeline), or at once when the
// client is closed, which is how its owner ends it. A write whose context
// ends while it waits for a group is never sent and returns then; one
// already sent waits for its group, as go-redis cannot interrupt a read.
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/internal/claimbatch"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
)

const group = "workers"

// Store is the Redis-backed action.Store.
type Store struct {
	rdb      redis.UniversalClient
	tag      string // "{prefix}"
	queue    string
	consumer string

	writes *groupcommit.Committer[*write]
	claims *claimbatch.Batcher

	mu       sync.Mutex
	lastAuto time.Time // last XAUTOCLAIM by this node
}

// The bounds of a group of writes: a group is one pipeline, which Redis
// runs script after script, and writeTimeout bounds its round trip. A
// write taken into a group waits for it whatever its caller's context
// (go-redis cannot interrupt a read), so writeTimeout is also how long a
// submission waits at most once sent, after at most its own 5 s to be
// sent (action.Service's submitWait).
const (
	groupMaxWrites = 256
	queueMaxWrites = 4 * groupMaxWrites
	writeTimeout   = 5 * time.Second
)

// write is one script call of a group; reply holds its answer once the
// group has run.
type write struct {
	script *redis.Script
	keys   []string
	args   []any
	reply  *redis.Cmd
}

// New returns a store on the keys of prefix (default "herald"), creating
// the consumer group if there is none.
func New(ctx context.Context, rdb redis.UniversalClient, prefix string) (*Store, error) {
	if prefix == "" {
		prefix = "herald"
	}
	tag := "{" + prefix + "}"
	s := &Store{rdb: rdb, tag: tag, queue: tag + ":act:q", consumer: hub.NewEpoch()}
	s.writes = groupcommit.New(groupMaxWrites, queueMaxWrites, s.runWrites)
	s.claims = claimbatch.New(s.fetch, s.Release)
	if err := s.ensureGroup(ctx); err != nil {
		return nil, fmt.Errorf("failed to open the action store: %w", err)
	}
	return s, nil
}

func (s *Store) ensureGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.queue, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// run calls script through the node's group commit and returns its reply.
func (s *Store) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	w := &write{script: script, keys: keys, args: args}
	if err := s.writes.Do(ctx, w); err != nil {
		c := redis.NewCmd(ctx)
		c.SetErr(err)
		return c
	}
	return w.reply
}

// runWrites sends a group of script calls in one pipeline. A script Redis
// does not know (it restarted, or its scripts were flushed) was not run:
// those calls go again with the script's source.
func (s *Store) runWrites(group []*write) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, w := range group {
		w.reply = w.script.EvalSha(ctx, pipe, w.keys, w.args...)
	}
	_, _ = pipe.Exec(ctx) // each reply holds its own error
	var again []*write
	for _, w := range group {
		if redis.HasErrorPrefix(w.reply.Err(), "NOSCRIPT") {
			again = append(again, w)
		}
	}
	if len(again) == 0 {
		return
	}
	pipe = s.rdb.Pipeline()
	for _, w := range again {
		w.reply = w.script.Eval(ctx, pipe, w.keys, w.args...)
	}
	_, _ = pipe.Exec(ctx)
}

func (s *Store) recKey(id string) string { return s.tag + ":act:r:" + id }

func (s *Store) idemKey(caller, key string) string {
	h := sha256.Sum256([]byte(caller + "\x00" + key))
	return s.tag + ":act:k:" + hex.EncodeToString(h[:16])
}

// createScript: KEYS queue, record, idempotency key (or "" for none);
// ARGV action JSON, ID, max queued, pending TTL ms, record key prefix.
// Returns {"old", json} for a kept key, {"full"}, or {"ok"}.
var createScript = redis.NewScript(`
if KEYS[3] ~= '' then
  local old = redis.call('GET', KEYS[3])
  if old then
    local a = redis.call('HGET', ARGV[5] .. old, 'a')
    if a then return {'old', a} end
  end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'full'} end
redis.call('HSET', KEYS[2], 'a', ARGV[1], 's', 'pending')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4]) end
redis.call('XADD', KEYS[1], '*', 'id', ARGV[2])
return {'ok'}
`)

// pendingTTL bounds how long a record waits for a worker.
const pendingTTL = 24 * time.Hour

// Create implements action.Store.
func (s *Store) Create(ctx context.Context, a *action.Stored, maxQueued int) (*action.Stored, error) {
	js, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	idem := ""
	if a.Key != "" {
		idem = s.idemKey(a.Caller, a.Key)
	}
	res, err := s.run(ctx, createScript, []string{s.queue, s.recKey(a.ID), idem},
		js, a.ID, maxQueued, pendingTTL.Milliseconds(), s.tag+":act:r:").StringSlice()
	if err != nil {
		return nil, err
	}
	switch res[0] {
	case "ok":
		return nil, nil
	case "full":
		return nil, action.ErrQueueFull
	case "old":
		var old action.Stored
		if err := json.Unmarshal([]byte(res[1]), &old); err != nil {
			return nil, fmt.Errorf("failed to read action record: %w", err)
		}
		return &old, nil
	}
	return nil, fmt.Errorf("unexpected reply %v", res)
}

// Claim implements action.Store: the workers of a node waiting at once
// share one fetch (action/internal/claimbatch).
func (s *Store) Claim(ctx context.Context, lease, wait time.Duration) (*action.Claim, error) {
	return s.claims.Claim(ctx, lease, wait)
}

// fetch leases up to n entries. Every lease/4 at most, this node first
// looks for entries whose lease ran out.
func (s *Store) fetch(ctx context.Context, lease time.Duration, n int, wait time.Duration) ([]*action.Claim, error) {
	s.mu.Lock()
	auto := time.Since(s.lastAuto) >= lease/4
	if auto {
		s.lastAuto = time.Now()
	}
	s.mu.Unlock()
	if auto {
		msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: s.queue, Group: group, Consumer: s.consumer, MinIdle: lease, Start: "0-0", Count: int64(n),
		}).Result()
		if err = s.fixGroup(ctx, err); err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			return s.claimed(ctx, msgs, true)
		}
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: s.consumer, Streams: []string{s.queue, ">"}, Count: int64(n), Block: wait,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err = s.fixGroup(ctx, err); err != nil {
		return nil, err
	}
	var msgs []redis.XMessage
	for _, st := range res {
		msgs = append(msgs, st.Messages...)
	}
	return s.claimed(ctx, msgs, false)
}

// fixGroup recreates the group if Redis lost it (a restart without data).
func (s *Store) fixGroup(ctx context.Context, err error) error {
	if err != nil && strings.HasPrefix(err.Error(), "NOGROUP") {
		if gerr := s.ensureGroup(ctx); gerr != nil {
			return gerr
		}
		return nil
	}
	return err
}

// claimed loads the records of claimed entries, in one round trip. An
// entry whose record is gone (it expired while nobody ran it) is dropped.
func (s *Store) claimed(ctx context.Context, msgs []redis.XMessage, redelivered bool) ([]*action.Claim, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.SliceCmd, len(msgs))
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i], _ = m.Values["id"].(string)
		gets[i] = pipe.HMGet(ctx, s.recKey(ids[i]), "a", "p")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]*action.Claim, 0, len(msgs))
	var gone []string
	for i, m := range msgs {
		a, ok, err := parseRecord(ids[i], gets[i].Val())
		if err != nil {
			return nil, err
		}
		if !ok {
			gone = append(gone, m.ID)
			continue
		}
		out = append(out, &action.Claim{Stored: *a, Token: m.ID, Redelivered: redelivered})
	}
	if len(gone) > 0 {
		s.rdb.XAck(ctx, s.queue, group, gone...)
		s.rdb.XDel(ctx, s.queue, gone...)
	}
	return out, nil
}

// Touch implements action.Store: claiming the entry again resets its idle
// time, which is what XAUTOCLAIM compares with the lease.
func (s *Store) Touch(ctx context.Context, c *action.Claim) error {
	return s.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: s.queue, Group: group, Consumer: s.consumer, MinIdle: 0, Messages: []string{c.Token},
	}).Err()
}

// Release implements action.Store: the entry is made to look idle for
// ever, so the next XAUTOCLAIM of any node takes it.
func (s *Store) Release(ctx context.Context, c *action.Claim) error {
	return s.rdb.Do(ctx, "XCLAIM", s.queue, group, s.consumer, 0, c.Token,
		"IDLE", int64(24*time.Hour/time.Millisecond), "JUSTID").Err()
}

// updateScript: KEYS record, idempotency key (or ""); ARGV action JSON,
// status, TTL ms (0: keep). It changes nothing on a final record and
// returns 0 then.
var updateScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 's')
if not st or st == 'succeeded' or st == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 's', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if KEYS[2] ~= '' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
end
return 1
`)

func (s *Store) update(ctx context.Context, a *action.Stored, ttl time.Duration) (bool, error) {
	js, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	idem := ""
	if a.Key != "" {
		idem = s.idemKey(a.Caller, a.Key)
	}
	n, err := s.run(ctx, updateScript, []string{s.recKey(a.ID), idem}, js, string(a.Status), ttl.Milliseconds()).Int()
	return n == 1, err
}

// Save implements action.Store.
func (s *Store) Save(ctx context.Context, a *action.Stored) error {
	_, err := s.update(ctx, a, 0)
	return err
}

// Finish implements action.Store.
func (s *Store) Finish(ctx context.Context, a *action.Stored, ttl time.Duration) (bool, error) {
	return s.update(ctx, a, max(ttl, time.Millisecond))
}

// doneScript: KEYS queue, record; ARGV entry ID. The record is marked
// only if it is still kept: a hash made by HSET alone would never expire.
var doneScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'p', '1') end
redis.call('XACK', KEYS[1], '` + group + `', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
`)

// Done implements action.Store.
func (s *Store) Done(ctx context.Context, c *action.Claim) error {
	return s.run(ctx, doneScript, []string{s.queue, s.recKey(c.ID)}, c.Token).Err()
}

// Local implements action.Store: every node on the Redis server reaches
// the actions.
func (s *Store) Local() bool { return false }

// Get implements action.Store.
func (s *Store) Get(ctx context.Context, id string) (*action.Stored, bool, error) {
	vals, err := s.rdb.HMGet(ctx, s.recKey(id), "a", "p").Result()
	if err != nil {
		return nil, false, err
	}
	return parseRecord(id, vals)
}

// parseRecord reads a record's fields a and p; ok is false when there is
// no record.
func parseRecord(id string, vals []any) (a *action.Stored, ok bool, err error) {
	js, ok := vals[0].(string)
	if !ok {
		return nil, false, nil
	}
	a = new(action.Stored)
	if err := json.Unmarshal([]byte(js), a); err != nil {
		return nil, false, fmt.Errorf("failed to read action record %s: %w", id, err)
	}
	p, _ := vals[1].(string)
	a.Published = p == "1"
	return a, true, nil
}
