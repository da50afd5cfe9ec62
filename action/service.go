package action

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Defaults of Options.
const (
	DefaultWorkers     = 16
	DefaultQueueSize   = 10000
	DefaultTTL         = time.Hour
	DefaultMaxAttempts = 5
	DefaultBackoffBase = 100 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	// DefaultLease is how long a claimed action stays with its worker
	// without a renewal; a node that dies gives its actions up after it.
	DefaultLease = 30 * time.Second
)

// cancelGrace is how long Shutdown waits, once its context has expired and
// the handlers' contexts are cancelled, for the workers to come back. A
// handler that honours its context returns well within it, and its worker
// gives the action back (shared store) within handOverTimeout; one that
// does not keeps its worker until it returns, and Shutdown does not wait
// for it.
const cancelGrace = time.Second

// storeGrace is how long Shutdown waits, once it has cancelled the workers'
// Store calls after cancelGrace, for the workers to come back. A store that
// honours cancellation answers within it; one that cannot interrupt a call
// (go-redis waits for a read's deadline) keeps its worker until the call's
// deadline or until its client is closed, and Shutdown does not wait for it.
const storeGrace = cancelGrace / 2

// handOverTimeout bounds a give-back (Store.Release) of an action that a
// worker stops running. It has a context of its own, not derived from the
// service's lifetime: at shutdown it is the last call a worker makes for
// its action, often after Shutdown has cancelled the others, and without it
// the action waits for its lease to run out. It is as long as cancelGrace,
// so that a give-back begun as the handlers are cancelled fits in
// cancelGrace and storeGrace.
const handOverTimeout = cancelGrace

// submitWait bounds Submit's wait for a shared store, as the hub bounds a
// publish: past it the action is refused as unavailable (503).
const submitWait = 5 * time.Second

// claimWait is how long one Claim waits for work before the worker checks
// whether it should stop.
const claimWait = time.Second

// storeTimeout bounds each Store call of a worker and of Shutdown.
const storeTimeout = 10 * time.Second

// storeCtx is the context of one Store call of a worker or of Shutdown. A
// local store answers from memory without waiting for anything (but Claim,
// which is given its own), so its calls go without a deadline: the timer
// of one would cost more than the call, several times per action. A shared
// store's calls end with storeLife too, so that a store that stopped
// answering does not hold the workers past Shutdown's bound.
func (s *Service) storeCtx() (context.Context, context.CancelFunc) {
	if s.local {
		return context.Background(), func() {}
	}
	return context.WithTimeout(s.storeLife, storeTimeout)
}

// handOverCtx is the context of a give-back (see handOverTimeout).
func handOverCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), handOverTimeout)
}

// Service accepts actions, runs them on its workers and reports them. The
// actions are in its Store from Submit on: a worker of any Service on the
// same Store runs each one, its final status is recorded there before its
// result event is published, and Get and idempotency keys read the Store.
// On a shared store a node that dies gives its actions up when their
// lease runs out, so actions run at least once and their result events are
// published at least once. Safe for concurrent use.
//
// Shutdown follows one rule, read from Store.Local: an unfinished action
// goes where it can still run. A shared store's actions can run on another
// node, so the queued ones stay queued, and the running ones that the
// deadline cuts are given back to the Store (handed over): failing them
// would turn a delay into an error. A local store's actions (one process's
// memory) could run nowhere else, so the queued ones are failed at once with
// CodeShutdown and the running ones the deadline cuts likewise, each with
// its action.failed event: the caller learns the outcome and may submit
// again.
//
// Goroutines: New starts Workers workers, which Shutdown ends (each once
// its current action is done, or cut). A worker kept past Shutdown's bound,
// by a handler that ignores its context or by a Store call that cannot be
// interrupted, ends when that call returns: a shared store's calls have
// deadlines (storeTimeout; handOverTimeout for a give-back), and Shutdown
// cancels them. A worker's lease renewal is a timer whose function Touches
// its current claim; nothing else is started.
//
// Locking: closeMu orders Submit against Shutdown, so that no action is
// created once Shutdown has begun (on a local store, an action created
// after the queue was failed would never end). Each worker's mu guards its
// current claim. The handler registry has its own lock. None is held while
// another is taken, and none while the Store or the hub is called, except
// closeMu for reading around Create and a worker's mu around Touch.
type Service struct {
	o        Options
	store    Store
	local    bool
	queueLen QueueLen // nil unless the store reports its queue's length
	hub      *hub.Hub
	log      *slog.Logger
	routes   routes

	closeMu sync.RWMutex
	closing bool // guarded by closeMu

	quit       chan struct{} // closed when Shutdown begins: no new action starts
	drained    chan struct{} // closed once Shutdown has dealt with the queue
	claimCtx   context.Context
	stopClaims context.CancelFunc // cancels claimCtx when Shutdown begins
	// workCtx is the parent of every handler's context and of the backoff
	// waits; it is cancelled when Shutdown's context expires.
	workCtx    context.Context
	cancelWork context.CancelFunc
	// storeLife is the parent of the workers' Store calls on a shared
	// store (storeCtx); Shutdown cancels it when the workers have not come
	// back within cancelGrace of the handlers' cancellation.
	storeLife   context.Context
	cancelStore context.CancelFunc
	workers     []*worker
	live        atomic.Int32  // workers still running
	idle        chan struct{} // closed by the last worker to end
	// handling and publishing count the workers in a handler and in a
	// publish of results, so that Shutdown can say what holds the workers
	// that did not come back: those, or Store calls (the rest).
	handling, publishing atomic.Int32

	accepted, succeeded, failed, retried, rejectedFull, running atomic.Int64
}

// withDefaults returns o with each zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffBase {
		o.BackoffMax = o.BackoffBase
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// New starts a service and its workers. Call Shutdown to stop it.
func New(o Options) (*Service, error) {
	if o.Hub == nil || o.Store == nil {
		return nil, errors.New("failed to start actions: Options.Hub and Options.Store are required")
	}
	o = o.withDefaults()
	s := &Service{
		o: o, store: o.Store, local: o.Store.Local(), hub: o.Hub, log: o.Logger,
		routes:  routes{exact: make(map[string]Handler)},
		quit:    make(chan struct{}),
		drained: make(chan struct{}),
		idle:    make(chan struct{}),
	}
	s.queueLen, _ = o.Store.(QueueLen)
	s.workCtx, s.cancelWork = context.WithCancel(context.Background())
	s.claimCtx, s.stopClaims = context.WithCancel(context.Background())
	s.storeLife, s.cancelStore = context.WithCancel(context.Background())
	if o.Echo {
		s.Handle("echo", HandlerFunc(echo))
	}
	s.live.Store(int32(o.Workers))
	s.workers = make([]*worker, o.Workers)
	for i := range s.workers {
		s.workers[i] = newWorker(s)
		go s.workers[i].work()
	}
	return s, nil
}

// echo is the built-in "echo" action: its result is its payload.
func echo(_ context.Context, call *Call) (json.RawMessage, error) {
	return call.Payload, nil
}

// Submit validates req and queues the action in the Store. It returns the
// action as it stands and created=false when an idempotent repeat matched
// an earlier one. Errors: hub.ErrInvalidTopic, hub.ErrInvalidType,
// hub.ErrInvalidData, ErrInvalidKey, ErrUnknownAction,
// ErrIdempotencyMismatch, ErrQueueFull, ErrShuttingDown, ErrUnavailable
// (the Store failed), or ctx.Err() (ctx bounds only the submission, never
// the action).
//
// Submit never runs the action itself: an accepted action is pending in
// the Store when Submit returns, and is certain to reach a final status
// (on a local store at the latest when Shutdown fails it).
func (s *Service) Submit(ctx context.Context, req Request) (Action, bool, error) {
	if err := ctx.Err(); err != nil {
		return Action{}, false, err
	}
	d, _, sum, err := s.routes.prepare(req)
	if err != nil {
		return Action{}, false, err
	}
	a := &Stored{
		Action:  Action{ID: newID(), Type: req.Type, Topic: req.Topic, Status: Pending, CreatedAt: time.Now().UTC()},
		Payload: d.Data,
		Key:     req.IdempotencyKey,
		Caller:  req.Caller,
	}
	if a.Key != "" {
		a.Sum = hex.EncodeToString(sum[:])
	}
	s.closeMu.RLock()
	if s.closing {
		s.closeMu.RUnlock()
		return Action{}, false, ErrShuttingDown
	}
	cctx := ctx
	if !s.local {
		// A shared store that stopped answering must not hold the request,
		// nor Shutdown, which waits for closeMu, for long: submitWait to
		// be sent, then the store's own bound on a write it sent (the
		// Redis store's writeTimeout), 10 s at most in all.
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, submitWait)
		defer cancel()
	}
	old, err := s.store.Create(cctx, a, s.o.QueueSize)
	s.closeMu.RUnlock()
	if errors.Is(err, ErrQueueFull) {
		s.rejectedFull.Add(1)
	} else if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return Action{}, false, fmt.Errorf("failed to queue the action: %w", err)
	}
	if old != nil {
		if old.Sum != a.Sum {
			return Action{}, false, fmt.Errorf("%w: %q was used with another body", ErrIdempotencyMismatch, req.IdempotencyKey)
		}
		return old.Action, false, nil
	}
	s.accepted.Add(1)
	return a.Action, true, nil
}

// Get returns an action by ID while the Store keeps its record.
func (s *Service) Get(ctx context.Context, id string) (Action, bool, error) {
	a, ok, err := s.store.Get(ctx, id)
	if err != nil {
		return Action{}, false, fmt.Errorf("failed to read the action: %w: %v", ErrUnavailable, err)
	}
	if !ok {
		return Action{}, false, nil
	}
	return a.Action, true, nil
}

// Stats returns this Service's counters (see Stats for Queued).
func (s *Service) Stats() Stats {
	st := Stats{
		Accepted:     s.accepted.Load(),
		Succeeded:    s.succeeded.Load(),
		Failed:       s.failed.Load(),
		Retried:      s.retried.Load(),
		RejectedFull: s.rejectedFull.Load(),
		Running:      s.running.Load(),
	}
	if s.queueLen != nil {
		st.Queued = int64(s.queueLen.Waiting())
	}
	return st
}

// Shutdown stops accepting actions (Submit returns ErrShuttingDown) and
// claiming them, lets the running ones finish until ctx expires, then
// cancels their handlers' contexts and waits a moment (cancelGrace) for the
// workers to come back. What becomes of the unfinished actions is the rule
// of Service: on a local store the queued ones are failed with CodeShutdown
// at once (they have not started) and the running ones when ctx expires,
// before their handlers are cancelled, so that a handler returning because
// of the cancellation cannot decide the outcome; on a shared store they are
// left in it, and the cut ones given back.
//
// Workers still out after cancelGrace have their Store calls cancelled
// too, and get a further moment (storeGrace); then Shutdown returns
// whether or not they are back. It returns at the latest cancelGrace +
// storeGrace after ctx expires, once it holds closeMu, which a Submit
// under way keeps for up to 10 s on a store that stopped answering
// (submitWait, then the store's own bound).
//
// It reports an error wrapping ctx.Err() when ctx expired with actions
// still running, saying whether it stopped every worker and, if not, what
// holds them: handlers that ignore their context, Store calls that did not
// end when cancelled, or publishes of results. Such a worker ends when that
// call returns (a Store call at its deadline, or when the store's client
// is closed); a late handler's result is discarded, and on a shared store
// its action given back. Shutdown may be called more than once; later
// calls wait like the first.
func (s *Service) Shutdown(ctx context.Context) error {
	s.closeMu.Lock()
	first := !s.closing
	s.closing = true
	s.closeMu.Unlock()
	if first {
		close(s.quit)
		s.stopClaims()
		if s.local {
			s.failQueued()
		}
		close(s.drained)
	}
	<-s.drained // a concurrent first call publishes the queued failures
	defer s.cancelStore()

	select {
	case <-s.idle:
		s.cancelWork()
		return nil
	case <-ctx.Done():
	}
	n := 0
	if s.local {
		n = s.cut()
	}
	s.cancelWork()
	idle := s.awaitIdle(cancelGrace)
	if !idle {
		// A worker still out is in a handler, in a publish, or waiting on
		// the Store; only the last can be cut short from here.
		s.cancelStore()
		idle = s.awaitIdle(storeGrace)
	}
	var msg string
	switch {
	case !s.local:
		msg = "failed to finish the running actions before shutdown, left them to other nodes"
	case n > 0:
		msg = fmt.Sprintf("failed to finish %d running actions before shutdown", n)
	}
	if !idle {
		if held := s.held(); held != "" {
			if msg != "" {
				msg += "; "
			}
			msg += "failed to stop the action workers (" + held + "), each ends when its call returns"
		}
	}
	if msg == "" {
		return nil
	}
	return fmt.Errorf("%s: %w", msg, ctx.Err())
}

// awaitIdle waits up to d for the workers to end, and reports whether
// they have.
func (s *Service) awaitIdle(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.idle:
		return true
	case <-t.C:
		return false
	}
}

// held logs and describes what holds the workers that have not ended, ""
// if they all have by now: a worker that is neither in a handler nor
// publishing is in a Store call (or between two, a moment). The counts are
// a snapshot of moving workers.
func (s *Service) held() string {
	h, p := s.handling.Load(), s.publishing.Load()
	st := max(s.live.Load()-h-p, 0)
	var parts []string
	if h > 0 {
		s.log.Warn("action handlers ignored cancellation at shutdown; their workers end when they return", "workers", h)
		parts = append(parts, fmt.Sprintf("%d in handlers that ignore cancellation", h))
	}
	if st > 0 {
		s.log.Warn("action store calls did not end when cancelled at shutdown; their workers end when the calls time out or the store's client is closed", "workers", st)
		parts = append(parts, fmt.Sprintf("%d in action store calls that did not end when cancelled", st))
	}
	if p > 0 {
		s.log.Warn("publishing action results did not end at shutdown; their workers end when the publish returns", "workers", p)
		parts = append(parts, fmt.Sprintf("%d publishing results", p))
	}
	return strings.Join(parts, ", ")
}

// failQueued fails every action still queued in a local store. Claims
// have stopped and nothing can be created any more; a worker whose Claim
// returned just before fails its action itself (see worker.run).
func (s *Service) failQueued() {
	var done []*Claim
	for {
		ctx, cancel := s.storeCtx()
		c, err := s.store.Claim(ctx, s.o.Lease, 0)
		cancel()
		if err != nil {
			s.log.Error("failed to take the queued actions to fail them at shutdown", "err", err)
			break
		}
		if c == nil {
			break
		}
		if c.Status.Final() || s.finish(c, nil, shutdownFailure()) {
			done = append(done, c)
		}
	}
	s.settle(done...)
}

// cut fails the actions the workers are running, in a local store, and
// returns how many this call made final. The Store makes a record final
// once, so a worker that finishes an action at the same moment either
// beats cut to it or finds it failed.
func (s *Service) cut() int {
	var done []*Claim
	for _, w := range s.workers {
		c := w.current()
		if c == nil {
			continue
		}
		ctx, cancel := s.storeCtx()
		a, ok, err := s.store.Get(ctx, c.ID)
		cancel()
		if err != nil || !ok || a.Status.Final() {
			continue // the worker finishes it, or fails it once cancelled
		}
		cc := &Claim{Stored: *a, Token: c.Token}
		if s.finish(cc, nil, shutdownFailure()) {
			done = append(done, cc)
		}
	}
	s.settle(done...)
	return len(done)
}

func shutdownFailure() *Failure {
	return &Failure{Code: CodeShutdown, Message: "the server shut down before the action finished"}
}

// bodySum is the hash of the canonical JSON of an action's type, topic and
// payload: the payload is decoded (numbers kept as written) and encoded
// again, so key order and whitespace do not make two bodies differ.
func bodySum(typ, topic string, payload json.RawMessage) ([sha256.Size]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("%w: %v", hub.ErrInvalidData, err)
	}
	b, err := json.Marshal(map[string]any{"type": typ, "topic": topic, "payload": v})
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("%w: %v", hub.ErrInvalidData, err)
	}
	return sha256.Sum256(b), nil
}

// idEncoding is base32 in lowercase: the characters of an action ID.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns "act_" and 20 random lowercase base32 characters (100
// bits), with one allocation: the string.
func newID() string {
	var r [13]byte // 104 bits: 21 characters, of which 20 are kept
	_, _ = rand.Read(r[:])
	var b [4 + 21]byte
	copy(b[:], "act_")
	idEncoding.Encode(b[4:], r[:])
	return string(b[:24])
}
