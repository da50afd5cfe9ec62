package action

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/hub"
)

// DefaultLease is how long a claimed action stays with its node without a
// renewal; a node that dies gives its actions up after it.
const DefaultLease = 30 * time.Second

// claimWait is how long one Claim waits for work before the worker checks
// whether it should stop.
const claimWait = time.Second

// pendingTTL bounds how long a record waits for a worker, so that a log
// with no node left does not keep its actions for ever.
const pendingTTL = 24 * time.Hour

// SharedOptions configures a Shared service.
type SharedOptions struct {
	Hub   *hub.Hub // where results are published (required)
	Store Store    // the actions of every node (required)
	// Workers, QueueSize (across the cluster), TTL, MaxAttempts,
	// BackoffBase, BackoffMax, Echo, Logger and ObserveDuration mean what they mean in
	// Options, with the same defaults.
	Workers         int
	QueueSize       int
	TTL             time.Duration
	MaxAttempts     int
	BackoffBase     time.Duration
	BackoffMax      time.Duration
	Echo            bool
	Logger          *slog.Logger
	ObserveDuration func(Status, time.Duration)
	// Lease is how long a node keeps an action it runs without renewing
	// it (it renews every Lease/3); default DefaultLease.
	Lease time.Duration
}

// Shared runs actions for a cluster of nodes on one Store: an accepted
// action is in the Store before Submit returns, a worker on any node runs
// it, and if that node dies the lease runs out and another node runs it
// again. So actions run at least once, and their result events are
// published at least once. Status queries and idempotency keys work from
// any node. Safe for concurrent use.
//
// Goroutines: New starts Workers workers, which Shutdown ends; each
// running action has one lease-renewing goroutine, which ends with it.
type Shared struct {
	o      SharedOptions
	store  Store
	hub    *hub.Hub
	log    *slog.Logger
	routes routes

	quit       chan struct{} // closed when Shutdown begins
	quitOnce   sync.Once
	claimCtx   context.Context // cancelled when Shutdown begins: no more claims
	stopClaims context.CancelFunc
	workCtx    context.Context // cancelled when Shutdown's context expires
	cancelWork context.CancelFunc
	workers    sync.WaitGroup

	accepted, succeeded, failed, retried, rejectedFull, running atomic.Int64
}

// NewShared starts a shared service and its workers.
func NewShared(o SharedOptions) (*Shared, error) {
	if o.Hub == nil || o.Store == nil {
		return nil, errors.New("failed to start actions: SharedOptions.Hub and Store are required")
	}
	d := Options{
		Workers: o.Workers, QueueSize: o.QueueSize, TTL: o.TTL, MaxAttempts: o.MaxAttempts,
		BackoffBase: o.BackoffBase, BackoffMax: o.BackoffMax, Logger: o.Logger,
	}.withDefaults()
	o.Workers, o.QueueSize, o.TTL, o.MaxAttempts = d.Workers, d.QueueSize, d.TTL, d.MaxAttempts
	o.BackoffBase, o.BackoffMax, o.Logger = d.BackoffBase, d.BackoffMax, d.Logger
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	s := &Shared{
		o: o, store: o.Store, hub: o.Hub, log: o.Logger,
		routes: routes{exact: make(map[string]Handler)},
		quit:   make(chan struct{}),
	}
	s.workCtx, s.cancelWork = context.WithCancel(context.Background())
	s.claimCtx, s.stopClaims = context.WithCancel(context.Background())
	if o.Echo {
		s.Handle("echo", HandlerFunc(echo))
	}
	s.workers.Add(o.Workers)
	for range o.Workers {
		go s.work()
	}
	return s, nil
}

// Handle registers a handler; see Service.Handle. Every node should
// register the same types: a node runs whatever action it claims.
func (s *Shared) Handle(typ string, h Handler) {
	if h == nil {
		panic("action: nil handler for type " + typ)
	}
	s.routes.set(typ, h)
}

// Submit implements Runner. The action is in the Store when it returns.
func (s *Shared) Submit(ctx context.Context, req Request) (Action, bool, error) {
	if err := ctx.Err(); err != nil {
		return Action{}, false, err
	}
	select {
	case <-s.quit:
		return Action{}, false, ErrShuttingDown
	default:
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
	old, err := s.store.Create(ctx, a, s.o.QueueSize)
	if errors.Is(err, ErrQueueFull) {
		s.rejectedFull.Add(1)
	}
	if err != nil && !errors.Is(err, ErrQueueFull) && ctx.Err() == nil {
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

// Get implements Runner.
func (s *Shared) Get(ctx context.Context, id string) (Action, bool, error) {
	a, ok, err := s.store.Get(ctx, id)
	if err != nil {
		return Action{}, false, fmt.Errorf("failed to read the action: %w: %v", ErrUnavailable, err)
	}
	if !ok {
		return Action{}, false, nil
	}
	return a.Action, true, nil
}

// Stats implements Runner: this node's counts. Queued is not known to a
// node (the queue is shared) and stays 0.
func (s *Shared) Stats() Stats {
	return Stats{
		Accepted:     s.accepted.Load(),
		Succeeded:    s.succeeded.Load(),
		Failed:       s.failed.Load(),
		Retried:      s.retried.Load(),
		RejectedFull: s.rejectedFull.Load(),
		Running:      s.running.Load(),
	}
}

// Shutdown implements Runner. The node stops claiming actions and lets
// the running ones finish until ctx expires; then it cancels their
// handlers and gives them back to the Store, where another node takes
// them. Queued actions stay queued for the other nodes: nothing is failed.
func (s *Shared) Shutdown(ctx context.Context) error {
	s.quitOnce.Do(func() { close(s.quit); s.stopClaims() })
	done := make(chan struct{})
	go func() { s.workers.Wait(); close(done) }()
	select {
	case <-done:
		s.cancelWork()
		return nil
	case <-ctx.Done():
	}
	s.cancelWork()
	select {
	case <-done:
	case <-time.After(cancelGrace):
		s.log.Warn("action handlers ignored cancellation at shutdown; their workers end when they return")
	}
	return fmt.Errorf("failed to finish the running actions before shutdown, handed them to other nodes: %w", ctx.Err())
}

// work is one worker: it claims actions and runs them, one at a time,
// until Shutdown.
func (s *Shared) work() {
	defer s.workers.Done()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		c, err := s.store.Claim(s.claimCtx, s.o.Lease, claimWait)
		if err != nil {
			if s.stopping() {
				return
			}
			s.log.Warn("failed to claim an action; retrying", "err", err, "in", backoff)
			if !s.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if c != nil {
			s.run(c)
		}
	}
}

func (s *Shared) stopping() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// sleep waits d, or reports false when the service is stopping.
func (s *Shared) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.quit:
		return false
	}
}

// storeTimeout bounds each Store call of a worker.
const storeTimeout = 10 * time.Second

func (s *Shared) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// run takes a claimed action to its end: run the handler (with retries),
// record the outcome, publish it, and remove it from the queue. A claim
// whose action is final already (its node died after recording it) only
// needs the rest.
func (s *Shared) run(c *Claim) {
	a := &c.Stored
	if !a.Status.Final() {
		if !s.execute(c) {
			return // given back, or left to the lease
		}
	}
	if !a.Published {
		s.publish(a)
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	if err := s.store.Done(ctx, c); err != nil {
		// The lease runs out and another node finds it final: it only
		// publishes the result again.
		s.log.Warn("failed to remove a finished action from the queue", "id", a.ID, "err", err)
	}
}

// execute runs the handler and records the final status; false if the
// action was given back instead (shutdown) or another node finished it.
func (s *Shared) execute(c *Claim) bool {
	a := &c.Stored
	h := s.routes.lookup(a.Type)
	var res []byte
	var err error
	if h == nil {
		err = &Failure{Code: "unknown_action", Message: fmt.Sprintf("no handler for action type %q on this node", a.Type)}
	} else {
		s.running.Add(1)
		renewed := s.renew(c)
		res, err = s.attempts(c, h)
		renewed()
		s.running.Add(-1)
		if s.workCtx.Err() != nil {
			// Shutdown's deadline cut the handler short: another node
			// runs the action again.
			ctx, cancel := s.storeCtx()
			defer cancel()
			if rerr := s.store.Release(ctx, c); rerr != nil {
				s.log.Warn("failed to give an action back; it moves when its lease runs out", "id", a.ID, "err", rerr)
			}
			return false
		}
	}
	now := time.Now().UTC()
	a.FinishedAt, a.Payload = &now, nil
	if err != nil {
		a.Status, a.Error = Failed, failureOf(err)
	} else if res, err = compact(res); err != nil {
		a.Status, a.Error = Failed, &Failure{Code: CodeHandlerBadResult, Message: err.Error()}
	} else {
		a.Status, a.Result = Succeeded, res
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	made, err := s.store.Finish(ctx, a, s.o.TTL)
	if err != nil {
		s.log.Error("failed to record an action's outcome; it runs again when its lease runs out", "id", a.ID, "err", err)
		return false
	}
	if !made {
		// Another node ran it too (this node's lease had run out) and
		// finished first: its outcome and event stand.
		return false
	}
	if a.Status == Failed {
		s.failed.Add(1)
	} else {
		s.succeeded.Add(1)
	}
	if s.o.ObserveDuration != nil {
		s.o.ObserveDuration(a.Status, a.FinishedAt.Sub(a.CreatedAt))
	}
	return true
}

// attempts calls the handler until it succeeds, fails for good or runs
// out of attempts, recording each attempt.
func (s *Shared) attempts(c *Claim, h Handler) ([]byte, error) {
	a := &c.Stored
	key := a.Key
	if key == "" {
		key = a.ID
	}
	for {
		a.Attempts++
		a.Status = Running
		ctx, cancel := s.storeCtx()
		if err := s.store.Save(ctx, a); err != nil {
			s.log.Warn("failed to record an action's attempt", "id", a.ID, "err", err)
		}
		cancel()
		res, err := invoke(s.workCtx, s.log, h, &Call{
			ID: a.ID, Type: a.Type, Topic: a.Topic, Payload: a.Payload,
			IdempotencyKey: key, Caller: a.Caller, Attempt: a.Attempts,
		})
		if err == nil || !IsRetryable(err) || a.Attempts >= s.o.MaxAttempts || s.workCtx.Err() != nil {
			return res, err
		}
		t := time.NewTimer(backoff(s.o.BackoffBase, s.o.BackoffMax, a.Attempts))
		select {
		case <-t.C:
		case <-s.workCtx.Done():
			t.Stop()
			return nil, s.workCtx.Err()
		}
		s.retried.Add(1)
	}
}

// renew keeps the claim's lease while the action runs; the returned func
// stops it and waits for it.
func (s *Shared) renew(c *Claim) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(s.o.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				ctx, cancel := s.storeCtx()
				if err := s.store.Touch(ctx, c); err != nil {
					s.log.Warn("failed to renew an action's lease", "id", c.ID, "err", err)
				}
				cancel()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-ended }
}

// publish sends a final action's result event. A failure is logged: the
// outcome stays readable with Get.
func (s *Shared) publish(a *Stored) {
	d, err := resultDraft(a.ID, a.Type, a.Topic, a.Status, a.Result, a.Error)
	if err != nil {
		s.log.Error("failed to encode action result", "id", a.ID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if _, err := s.hub.Publish(ctx, d); err != nil {
		s.log.Error("failed to publish an action result", "id", a.ID, "err", err)
	}
}
