package action

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/expiry"
)

// Defaults of Options.
const (
	DefaultWorkers     = 16
	DefaultQueueSize   = 10000
	DefaultTTL         = time.Hour
	DefaultMaxFinished = 100000
	// DefaultMaxFinishedBytes bounds the finished records' memory: at the
	// default TTL it holds a steady 75 KB/s of results.
	DefaultMaxFinishedBytes = 256 << 20
	DefaultMaxAttempts      = 5
	DefaultBackoffBase      = 100 * time.Millisecond
	DefaultBackoffMax       = 10 * time.Second
)

// cancelGrace is how long Shutdown waits, once its context has expired and
// the handlers' contexts are cancelled, for the workers to come back. A
// handler that honours its context returns well within it; one that does not
// keeps its worker until it returns, and Shutdown does not wait for it.
const cancelGrace = time.Second

// Service accepts, runs and reports actions. Safe for concurrent use.
//
// Goroutines: New starts Workers worker goroutines and one janitor; the
// Service owns them all. Workers end when Shutdown has begun and their
// current action is done (or, when Shutdown's context expires, as soon as
// their handler returns after its context is cancelled). The janitor ends
// when Shutdown returns. Nothing else is started: handlers run on the
// workers, results are published from the worker (or from Shutdown for the
// actions it fails).
//
// Locking: Service.mu guards the records, the idempotency index, the expiry
// list and the closing flag. It is a leaf lock: nothing is locked, called or
// published while it is held, except the non-blocking send onto the queue.
// The handler registry has its own lock (routes.mu), never held together
// with Service.mu. A record's status becomes final under Service.mu, exactly
// once (finalizeLocked), and only after that is its result event published,
// by whichever goroutine made it final.
type Service struct {
	hub         *hub.Hub
	log         *slog.Logger
	observe     func(Status, time.Duration)
	ttl         time.Duration
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration

	routes routes

	// queue holds accepted actions waiting for a worker. It is bounded by
	// Options.QueueSize; Submit never blocks on it: full is ErrQueueFull.
	queue chan *record
	// quit is closed when Shutdown begins: workers take no new action.
	quit chan struct{}
	// drained is closed once Shutdown has failed the queued actions.
	drained chan struct{}
	// workCtx is the parent of every handler's context and of the backoff
	// waits; it is cancelled when Shutdown's context expires.
	workCtx    context.Context
	cancelWork context.CancelFunc
	live       atomic.Int32  // workers still running
	idle       chan struct{} // closed by the last worker to end

	stopJanitor     chan struct{}
	stopJanitorOnce sync.Once
	janitorDone     chan struct{}

	mu          sync.Mutex
	closing     bool
	records     map[string]*record
	keys        map[idemKey]*record
	expiry      expiry.Queue[*record] // finished records, oldest first
	maxFinished int
	maxBytes    int // bound of expiry.Bytes()

	accepted     atomic.Int64
	succeeded    atomic.Int64
	failed       atomic.Int64
	retried      atomic.Int64
	rejectedFull atomic.Int64
	queued       atomic.Int64
	running      atomic.Int64
}

// idemKey scopes an idempotency key to its caller.
type idemKey struct {
	caller, key string
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
	if o.MaxFinished <= 0 {
		o.MaxFinished = DefaultMaxFinished
	}
	if o.MaxFinishedBytes <= 0 {
		o.MaxFinishedBytes = DefaultMaxFinishedBytes
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// New starts a service and its workers. Call Shutdown to stop it.
func New(o Options) (*Service, error) {
	if o.Hub == nil {
		return nil, errors.New("failed to start actions: Options.Hub is required")
	}
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		hub:         o.Hub,
		observe:     o.ObserveDuration,
		log:         o.Logger,
		ttl:         o.TTL,
		maxFinished: o.MaxFinished,
		maxBytes:    o.MaxFinishedBytes,
		maxAttempts: o.MaxAttempts,
		backoffBase: o.BackoffBase,
		backoffMax:  o.BackoffMax,
		routes:      routes{exact: make(map[string]Handler)},
		queue:       make(chan *record, o.QueueSize),
		quit:        make(chan struct{}),
		drained:     make(chan struct{}),
		workCtx:     ctx,
		cancelWork:  cancel,
		idle:        make(chan struct{}),
		stopJanitor: make(chan struct{}),
		janitorDone: make(chan struct{}),
		records:     make(map[string]*record),
		keys:        make(map[idemKey]*record),
	}
	if o.Echo {
		s.Handle("echo", HandlerFunc(echo))
	}
	s.live.Store(int32(o.Workers))
	for range o.Workers {
		go s.work()
	}
	go expiry.Janitor(expiry.Interval(o.TTL), s.stopJanitor, s.janitorDone, s.sweep)
	return s, nil
}

// echo is the built-in "echo" action: its result is its payload.
func echo(_ context.Context, call *Call) (json.RawMessage, error) {
	return call.Payload, nil
}

// Submit validates req and queues the action. It returns the action as it
// stands and created=false when an idempotent repeat matched an earlier one.
// Errors: hub.ErrInvalidTopic, hub.ErrInvalidType, hub.ErrInvalidData,
// ErrInvalidKey, ErrUnknownAction, ErrIdempotencyMismatch, ErrQueueFull, ErrShuttingDown
// (or ctx.Err() when ctx is already done; ctx bounds only the submission,
// never the action).
//
// Submit never blocks on the queue and never runs the action itself: an
// accepted action is pending when Submit returns and is certain to reach a
// final status (at the latest when Shutdown fails it).
func (s *Service) Submit(ctx context.Context, req Request) (a Action, created bool, err error) {
	if err := ctx.Err(); err != nil {
		return Action{}, false, err
	}
	d, h, sum, err := s.routes.prepare(req)
	if err != nil {
		return Action{}, false, err
	}
	now := time.Now()
	r := &record{
		id:      newID(),
		typ:     req.Type,
		topic:   req.Topic,
		payload: d.Data,
		key:     req.IdempotencyKey,
		caller:  req.Caller,
		sum:     sum,
		handler: h,
		status:  Pending,
		created: now,
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return Action{}, false, ErrShuttingDown
	}
	k := idemKey{caller: req.Caller, key: req.IdempotencyKey}
	if r.key != "" {
		if old := s.keys[k]; old != nil {
			if !s.expiredLocked(old, now) {
				if old.sum != sum {
					s.mu.Unlock()
					return Action{}, false, fmt.Errorf("%w: %q was used with another body", ErrIdempotencyMismatch, req.IdempotencyKey)
				}
				a := old.snapshot()
				s.mu.Unlock()
				return a, false, nil
			}
			// Past its TTL but not yet swept: forget it now so the key is free.
			s.forgetLocked(old)
		}
	}
	// Counted before the send: a worker may take the action at once.
	s.queued.Add(1)
	select {
	case s.queue <- r:
	default:
		s.mu.Unlock()
		s.queued.Add(-1)
		s.rejectedFull.Add(1)
		return Action{}, false, ErrQueueFull
	}
	s.accepted.Add(1)
	s.records[r.id] = r
	if r.key != "" {
		s.keys[k] = r
	}
	// Still pending: the worker needs s.mu to mark it running.
	a = r.snapshot()
	s.mu.Unlock()
	return a, true, nil
}

// Get returns an action by ID, while its record is kept. It never fails:
// the records are in memory.
func (s *Service) Get(_ context.Context, id string) (Action, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[id]
	if r == nil || s.expiredLocked(r, time.Now()) {
		return Action{}, false, nil
	}
	return r.snapshot(), true, nil
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Accepted:     s.accepted.Load(),
		Succeeded:    s.succeeded.Load(),
		Failed:       s.failed.Load(),
		Retried:      s.retried.Load(),
		RejectedFull: s.rejectedFull.Load(),
		Queued:       s.queued.Load(),
		Running:      s.running.Load(),
	}
}

// Shutdown stops accepting actions (Submit returns ErrShuttingDown), lets
// running actions finish until ctx expires, then fails every action still
// queued or running with code "shutdown" (publishing action.failed for
// each), and stops the workers.
//
// Queued actions have not started, so they are failed at once rather than
// started during the grace period. When ctx expires, the running actions
// (including those waiting to retry) are failed first, then their handlers'
// contexts are cancelled, and Shutdown waits a moment for the workers to
// return; it then reports an error wrapping ctx.Err(). A handler that ignores
// its context keeps its worker until it returns; its result is discarded.
// Shutdown may be called more than once; later calls wait like the first.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closing
	s.closing = true
	s.mu.Unlock()
	if first {
		close(s.quit)
		s.failQueued()
		close(s.drained)
	}
	<-s.drained // a concurrent first call publishes the queued failures
	defer s.stopJanitorAndWait()

	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
	}
	n := s.cut()
	t := time.NewTimer(cancelGrace)
	defer t.Stop()
	idle := true
	select {
	case <-s.idle:
	case <-t.C:
		idle = false
		s.log.Warn("action handlers ignored cancellation at shutdown; their workers end when they return",
			"workers", s.live.Load())
	}
	switch {
	case n > 0:
		return fmt.Errorf("failed to finish %d running actions before shutdown: %w", n, ctx.Err())
	case !idle:
		return fmt.Errorf("failed to stop action workers: handlers ignore cancellation: %w", ctx.Err())
	}
	return nil
}

// failQueued fails every action still in the queue. Called once closing is
// set, so nothing can be added to the queue any more; a worker may take an
// action concurrently, and then fails it itself (see run).
func (s *Service) failQueued() {
	var done []*record
	for {
		select {
		case r := <-s.queue:
			s.queued.Add(-1)
			s.mu.Lock()
			if s.finalizeLocked(r, nil, shutdownFailure()) {
				done = append(done, r)
			}
			s.mu.Unlock()
			continue
		default:
		}
		break
	}
	s.publish(done...)
}

// cut fails every action not yet final and cancels the handlers' contexts.
// The records are final before the cancellation, so a handler returning
// because of it cannot decide the outcome.
func (s *Service) cut() int {
	var done []*record
	s.mu.Lock()
	for _, r := range s.records {
		if s.finalizeLocked(r, nil, shutdownFailure()) {
			done = append(done, r)
		}
	}
	s.mu.Unlock()
	s.cancelWork()
	s.publish(done...)
	return len(done)
}

func (s *Service) stopJanitorAndWait() {
	s.stopJanitorOnce.Do(func() { close(s.stopJanitor) })
	<-s.janitorDone
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

// newID returns "act_" and 20 random lowercase base32 characters (100 bits).
func newID() string {
	return "act_" + strings.ToLower(rand.Text()[:20])
}
