// Package memstore is an action.Store in memory: the queue and the records
// of the actions of one Herald process, for the memory broker.
//
// It keeps, under one lock:
//
//	the queue      every action from Create until Done, in the order it
//	               was created; an action is either waiting for a worker
//	               or claimed by one
//	the records    one per action: pending and running ones while they are
//	               queued, finished ones until their TTL (given to Finish)
//	               has passed or a bound forgets them early
//	the keys       an idempotency key (caller and key) per action that has
//	               one, living exactly as long as its record
//
// Bounds: Create refuses an action with action.ErrQueueFull once maxQueued
// actions are queued or running, or once their records, payloads included,
// would take more than Options.MaxQueuedBytes; finished records are kept at most
// Options.MaxFinished of them and Options.MaxFinishedBytes of them (each
// counted by size), the oldest forgotten first. Records that are not
// finished are never forgotten: each is in the queue, which is bounded.
//
// A Store is Local: no other process can reach its actions, so a Service
// on it fails the ones it leaves unfinished at Shutdown (see
// action.Service).
//
// A lease, in one process, is a deadline on a claim: the worker holding it
// renews it with Touch; Release, or a deadline that passes without a
// renewal, makes the action available again and the next Claim of any
// runner on the Store takes it, as redelivered. A Claim that finds nothing
// waits for a wake-up: each action made ready wakes one waiting Claim, and
// a Claim that takes one while more are ready passes the wake-up on, so a
// burst wakes as many workers as it has actions and an idle worker costs
// nothing. Each claim has its own
// token: Touch and Release of an earlier claim of the same action change
// nothing. The records of several runners are one set, so a Store stands for
// every node of the conformance suite at once.
//
// Goroutines: New starts one janitor, which frees the memory of expired
// records (Get and Create already treat them as gone); Close ends it. A
// Store is safe for concurrent use.
package memstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/internal/expiry"
)

// Defaults of Options.
const (
	DefaultMaxFinished = 100000
	// DefaultMaxFinishedBytes bounds the finished records' memory: at the
	// default TTL it holds a steady 75 KB/s of results.
	DefaultMaxFinishedBytes = 256 << 20
	// DefaultMaxQueuedBytes bounds the queued actions' memory: 256 of the
	// largest payloads the server accepts by default (1 MiB), or the
	// whole default queue at 26 KB each.
	DefaultMaxQueuedBytes = 256 << 20
)

// errLeaseLost is Touch's error for a claim that is no longer the
// action's current one.
var errLeaseLost = errors.New("failed to renew the lease: the action was claimed again or is done")

// Options configures a Store.
type Options struct {
	// TTL paces the sweep of expired records (see expiry.Interval):
	// the TTL the runner gives to Finish. Default action.DefaultTTL.
	TTL time.Duration
	// MaxFinished bounds how many finished records are kept whatever
	// their age: past it the oldest are forgotten early. Default
	// DefaultMaxFinished.
	MaxFinished int
	// MaxFinishedBytes bounds the memory of the finished records kept,
	// each counted as its result or error, its ID, type, topic, key and
	// body hash, plus a fixed allowance for the record and its index
	// entries: past it the oldest are forgotten early. Default
	// DefaultMaxFinishedBytes.
	MaxFinishedBytes int
	// MaxQueuedBytes bounds the memory of the actions queued or running,
	// each counted as a finished record is plus its payload: past it
	// Create refuses a new action with action.ErrQueueFull, as past its
	// maxQueued. Default DefaultMaxQueuedBytes.
	MaxQueuedBytes int
}

// Store is the in-memory action.Store.
type Store struct {
	maxFinished int
	maxBytes    int
	maxQueued   int // bytes: Options.MaxQueuedBytes

	stop      chan struct{} // closed by Close: the janitor ends
	stopOnce  sync.Once
	sweepDone chan struct{}

	mu sync.Mutex
	// queued holds every action from Create until Done. The calls of a
	// claim's holder (Save, Finish, Done) look their action up here: a
	// map of a few entries, where records holds every finished one too.
	queued map[string]*entry
	// queuedBytes is what the entries of queued count (entry.queued).
	queuedBytes int
	ready       line // the actions waiting for a worker, oldest first
	claimed     map[*entry]struct{}
	// nextDeadline is at most the earliest deadline of the claimed
	// entries: before it, no lease can have run out.
	nextDeadline time.Time
	records      map[string]*entry
	keys         map[idemKey]*entry
	expiry       expiry.Queue[*entry] // finished records, in the order they finished
	gen          uint64               // the last claim token
	// wake holds a wake-up for one waiting Claim when an action is ready
	// (see the package doc). It is written with s.mu held, never blocking.
	wake chan struct{}
}

type idemKey struct{ caller, key string }

// entry is one action. Every field is guarded by Store.mu.
type entry struct {
	a         action.Stored // the record, never shared with a caller (but its payload with claims)
	published bool
	expires   time.Time // when final: when the record expires
	kept      bool      // the record is in Store.records
	queued    int       // what it counts in Store.queuedBytes while queued

	inLine      bool   // in Store.ready
	prev, next  *entry // its neighbours there
	token       uint64 // the current claim's token, 0 when not claimed
	lease       time.Duration
	deadline    time.Time // when the current claim's lease runs out
	redelivered bool      // some worker claimed it before
}

// line is a queue of entries linked through their own fields, so that
// making an action ready allocates nothing.
type line struct {
	head, tail *entry
	n          int
}

func (l *line) push(e *entry) {
	e.inLine, e.prev, e.next = true, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

func (l *line) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.inLine, e.prev, e.next = false, nil, nil
	l.n--
}

// New returns an empty store and starts its janitor. Call Close to stop it.
func New(o Options) *Store {
	if o.TTL <= 0 {
		o.TTL = action.DefaultTTL
	}
	if o.MaxFinished <= 0 {
		o.MaxFinished = DefaultMaxFinished
	}
	if o.MaxFinishedBytes <= 0 {
		o.MaxFinishedBytes = DefaultMaxFinishedBytes
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	s := &Store{
		maxFinished: o.MaxFinished,
		maxBytes:    o.MaxFinishedBytes,
		maxQueued:   o.MaxQueuedBytes,
		stop:        make(chan struct{}),
		sweepDone:   make(chan struct{}),
		queued:      make(map[string]*entry),
		claimed:     make(map[*entry]struct{}),
		records:     make(map[string]*entry),
		keys:        make(map[idemKey]*entry),
		wake:        make(chan struct{}, 1),
	}
	go expiry.Janitor(expiry.Interval(o.TTL), s.stop, s.sweepDone, s.sweep)
	return s
}

// Close stops the janitor and waits for it. The store stays usable; only
// expired records are no longer freed until they are pushed out by the
// bounds. Close may be called more than once.
func (s *Store) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.sweepDone
}

// Create implements action.Store.
func (s *Store) Create(ctx context.Context, a *action.Stored, maxQueued int) (*action.Stored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := idemKey{caller: a.Caller, key: a.Key}
	if a.Key != "" {
		if old := s.keys[k]; old != nil {
			if !old.expired(now) {
				c := old.copy()
				return &c, nil
			}
			// Past its TTL but not yet swept: forget it now so the key is free.
			s.forgetLocked(old)
		}
	}
	n := size(a) + len(a.Payload)
	// One action always fits an empty queue, as the largest body the
	// server takes counts a little more here than --max-body.
	if len(s.queued) >= maxQueued || s.queuedBytes > 0 && s.queuedBytes+n > s.maxQueued {
		return nil, action.ErrQueueFull
	}
	e := &entry{a: clone(a), kept: true, queued: n}
	s.queued[e.a.ID] = e
	s.queuedBytes += n
	s.records[e.a.ID] = e
	if a.Key != "" {
		s.keys[k] = e
	}
	s.makeReady(e)
	return nil, nil
}

// makeReady puts e in line for a worker and wakes a waiting claim.
func (s *Store) makeReady(e *entry) {
	s.ready.push(e)
	s.wakeOne()
}

// wakeOne leaves a wake-up for the next waiting Claim, unless one is
// there already (which that Claim passes on).
func (s *Store) wakeOne() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Local implements action.Store: the actions live in this process alone.
func (s *Store) Local() bool { return true }

// Waiting implements action.QueueLen.
func (s *Store) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready.n
}

// Claim implements action.Store. It takes an action at once if one is
// ready, without a timer; else it waits for a wake-up, the earliest lease
// deadline, wait, or ctx.
func (s *Store) Claim(ctx context.Context, lease, wait time.Duration) (*action.Claim, error) {
	var t *time.Timer
	end := time.Now().Add(wait)
	for {
		now := time.Now()
		s.mu.Lock()
		c, next := s.claimLocked(now, lease)
		s.mu.Unlock()
		if c != nil {
			return c, nil
		}
		d := end.Sub(now)
		if d <= 0 {
			return nil, nil
		}
		if !next.IsZero() {
			d = min(d, next.Sub(now))
		}
		if t == nil {
			t = time.NewTimer(d)
			defer t.Stop()
		} else {
			t.Reset(d)
		}
		select {
		case <-s.wake:
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// claimLocked leases an action whose lease ran out, else the oldest ready
// one. With none, it returns the earliest lease deadline (zero: none).
func (s *Store) claimLocked(now time.Time, lease time.Duration) (*action.Claim, time.Time) {
	for {
		e := s.takeLocked(now)
		if e == nil {
			return nil, s.nextDeadline
		}
		if !e.kept {
			// Its record was forgotten while it waited (it was final and
			// pushed out by a bound): nothing is left to run or publish.
			s.dequeueLocked(e)
			continue
		}
		if s.ready.n > 0 {
			s.wakeOne() // pass the wake-up on to the next waiting Claim
		}
		s.gen++
		e.token, e.lease, e.deadline = s.gen, lease, now.Add(lease)
		s.claimed[e] = struct{}{}
		if s.nextDeadline.IsZero() || e.deadline.Before(s.nextDeadline) {
			s.nextDeadline = e.deadline
		}
		// The claim shares the payload: the runner hands it to the
		// handler to read, and nothing writes it.
		st := cloneWith(&e.a, e.a.Payload)
		st.Published = e.published
		c := &action.Claim{Stored: st, Token: strconv.FormatUint(e.token, 10), Redelivered: e.redelivered}
		e.redelivered = true
		return c, time.Time{}
	}
}

// takeLocked removes and returns a claimed entry whose lease ran out, or
// else the oldest ready entry, or nil.
func (s *Store) takeLocked(now time.Time) *entry {
	if !s.nextDeadline.IsZero() && !now.Before(s.nextDeadline) {
		// Some lease may have run out (Touch moves deadlines only later):
		// find one, and the earliest deadline of the others.
		var out *entry
		var next time.Time
		for e := range s.claimed {
			if out == nil && !now.Before(e.deadline) {
				out = e
				continue
			}
			if next.IsZero() || e.deadline.Before(next) {
				next = e.deadline
			}
		}
		s.nextDeadline = next
		if out != nil {
			delete(s.claimed, out)
			out.token = 0
			return out
		}
	}
	if e := s.ready.head; e != nil {
		s.ready.remove(e)
		return e
	}
	return nil
}

// claimOf returns the entry whose current claim c is, or nil when c's
// lease ran out and another claim followed, or the action left the queue.
func (s *Store) claimOf(c *action.Claim) *entry {
	e := s.queued[c.ID]
	if e == nil || e.token == 0 || strconv.FormatUint(e.token, 10) != c.Token {
		return nil
	}
	return e
}

// Touch implements action.Store: the lease runs for as long again as it
// was granted for.
func (s *Store) Touch(_ context.Context, c *action.Claim) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.claimOf(c)
	if e == nil {
		return errLeaseLost
	}
	e.deadline = time.Now().Add(e.lease)
	return nil
}

// Release implements action.Store: the action is ready again at once, for
// the next Claim. A claim that is no longer current changes nothing.
func (s *Store) Release(_ context.Context, c *action.Claim) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.claimOf(c); e != nil {
		delete(s.claimed, e)
		e.token = 0
		s.makeReady(e)
	}
	return nil
}

// Save implements action.Store. A final record is not changed, nor one
// that left the queue (it is final). The payload is not copied again: it
// does not change until the action is final, when Finish drops it.
func (s *Store) Save(_ context.Context, a *action.Stored) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.queued[a.ID]; e != nil && e.kept && !e.a.Status.Final() {
		e.a = cloneWith(a, e.a.Payload)
	}
	return nil
}

// Finish implements action.Store. Only an action in the queue can be
// made final: one that left it was final already.
func (s *Store) Finish(_ context.Context, a *action.Stored, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.queued[a.ID]
	if e == nil || !e.kept || e.a.Status.Final() {
		return false, nil
	}
	e.a = clone(a)
	e.expires = time.Now().Add(ttl)
	s.expiry.Push(e, size(&e.a))
	for s.expiry.Len() > s.maxFinished || s.expiry.Bytes() > s.maxBytes {
		// Over a bound: the oldest finished record goes early.
		s.forgetLocked(s.expiry.Front())
		s.expiry.Pop()
	}
	return true, nil
}

// Done implements action.Store. The action leaves the queue whichever
// claim calls it: it is final by then, and a later claim of it would only
// publish its result again.
func (s *Store) Done(_ context.Context, c *action.Claim) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.queued[c.ID]; e != nil {
		e.published = true
		s.dequeueLocked(e)
	}
	return nil
}

// Get implements action.Store.
func (s *Store) Get(_ context.Context, id string) (*action.Stored, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[id]
	if e == nil || e.expired(time.Now()) {
		return nil, false, nil
	}
	a := e.copy()
	return &a, true, nil
}

// dequeueLocked takes e out of the queue for good.
func (s *Store) dequeueLocked(e *entry) {
	delete(s.queued, e.a.ID)
	s.queuedBytes -= e.queued
	e.queued = 0
	delete(s.claimed, e)
	if e.inLine {
		s.ready.remove(e)
	}
	e.token = 0
}

// forgetLocked removes e's record and its idempotency key; the entry may
// still be in the queue (see claimLocked).
func (s *Store) forgetLocked(e *entry) {
	if !e.kept {
		return
	}
	e.kept = false
	delete(s.records, e.a.ID)
	if e.a.Key != "" {
		delete(s.keys, idemKey{caller: e.a.Caller, key: e.a.Key})
	}
}

// sweep forgets the finished records that expired at now, from the oldest,
// and those a bound or Create forgot already. It stops at the first one
// still kept: with one TTL for all, as a runner gives, nothing after it has
// expired either.
func (s *Store) sweep(now time.Time) {
	s.expiry.Sweep(&s.mu, func(e *entry) bool { return !e.kept || e.expired(now) }, s.forgetLocked)
}

// recordOverhead is what a finished record costs besides its variable
// fields: the entry, its entries in the records and keys maps and its slot
// in the expiry queue, rounded up.
const recordOverhead = 512

// size is what a finished record counts against Options.MaxFinishedBytes.
// The payload is not counted: it is dropped when the record becomes final.
func size(a *action.Stored) int {
	n := recordOverhead + len(a.Result) + len(a.ID) + len(a.Type) + len(a.Topic) + len(a.Key) + len(a.Caller) + len(a.Sum)
	if a.Error != nil {
		n += len(a.Error.Code) + len(a.Error.Message)
	}
	return n
}

// expired reports whether e is final and past its TTL, which makes it gone
// for Get and for its idempotency key even before the sweep frees it.
func (e *entry) expired(now time.Time) bool {
	return e.a.Status.Final() && !now.Before(e.expires)
}

// copy returns e's record for a caller.
func (e *entry) copy() action.Stored {
	a := clone(&e.a)
	a.Published = e.published
	return a
}

// clone copies a so that neither the caller nor the store sees the
// other's later changes.
func clone(a *action.Stored) action.Stored {
	return cloneWith(a, bytes.Clone(a.Payload))
}

// cloneWith is clone with the payload given: where the payload is the
// store's own, which nothing writes (see claimLocked and Save).
func cloneWith(a *action.Stored, payload json.RawMessage) action.Stored {
	c := *a
	c.Payload = payload
	c.Result = bytes.Clone(a.Result)
	if a.Error != nil {
		f := *a.Error
		c.Error = &f
	}
	if a.FinishedAt != nil {
		t := *a.FinishedAt
		c.FinishedAt = &t
	}
	c.Published, c.Version = false, 0
	return c
}
