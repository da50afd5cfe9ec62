package action

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/jsonenc"
)

const (
	// publishBatch is how many results go into one hub.Publish when many
	// finish at once (Shutdown).
	publishBatch = 256
)

// worker runs the actions it claims, one at a time. The Service owns it:
// it ends once Shutdown has closed quit and its current action is done,
// and the last worker to end closes idle.
type worker struct {
	s *Service
	// renewal fires every Lease/3 for as long as the worker lives and
	// Touches the current claim, if there is one: each claim is renewed
	// within Lease/3 of being taken and every Lease/3 after, and an action
	// costs no timer operation. Its function holds mu, so that a renewal in
	// flight is over once set has taken the claim away.
	renewal *time.Timer

	mu    sync.Mutex
	cur   *Claim // the action being run, nil between actions
	ended bool   // the worker has ended: the renewal stops
}

func newWorker(s *Service) *worker {
	w := &worker{s: s}
	w.mu.Lock() // the timer may fire before it is assigned
	w.renewal = time.AfterFunc(s.o.Lease/3, w.renew)
	w.mu.Unlock()
	return w
}

func (w *worker) work() {
	s := w.s
	defer func() {
		w.mu.Lock()
		w.ended = true
		w.renewal.Stop()
		w.mu.Unlock()
		if s.live.Add(-1) == 0 {
			close(s.idle)
		}
	}()
	backoff := 100 * time.Millisecond
	for !s.stopping() {
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
			w.run(c)
		}
	}
}

// set makes c the worker's current claim (nil when the action is over),
// which the renewal keeps.
func (w *worker) set(c *Claim) {
	w.mu.Lock()
	w.cur = c
	w.mu.Unlock()
}

// renew is the renewal timer's function.
func (w *worker) renew() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	defer w.renewal.Reset(w.s.o.Lease / 3)
	if w.cur == nil || w.s.storeLife.Err() != nil {
		// Once storeLife has ended, Shutdown has stopped waiting for this
		// worker and a Touch would fail at once: the lease runs out and
		// the action moves, unless the worker gives it back first.
		return
	}
	ctx, cancel := w.s.storeCtx()
	err := w.s.store.Touch(ctx, w.cur)
	cancel()
	if err != nil {
		w.s.log.Warn("failed to renew an action's lease", "id", w.cur.ID, "err", err)
	}
}

// current returns the ID and token of the worker's current claim (nil when
// there is none), for Shutdown's cut. The worker changes the rest of the
// claim as it runs, so that is not shared.
func (w *worker) current() *Claim {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur == nil {
		return nil
	}
	return &Claim{Stored: Stored{Action: Action{ID: w.cur.ID}}, Token: w.cur.Token}
}

func (s *Service) stopping() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// sleep waits d, or reports false when the service is stopping.
func (s *Service) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.quit:
		return false
	}
}

// run takes a claimed action to its end: run the handler (with retries),
// record the outcome, publish it, and remove it from the queue. A claim
// whose action is final already (its worker died after recording it) only
// needs the rest.
func (w *worker) run(c *Claim) {
	s := w.s
	if !c.Status.Final() {
		if s.stopping() {
			// Shutdown began after the claim: the action has not started,
			// and goes where the Service's rule sends a queued one.
			if !s.local {
				s.release(c)
				return
			}
			if !s.finish(c, nil, shutdownFailure()) {
				return
			}
		} else if !w.execute(c) {
			return // given back, or finished by another
		}
	}
	s.settle(c)
}

// execute runs the handler and records the final status; false if the
// action was given back instead (shutdown on a shared store), or another
// worker or Shutdown finished it.
func (w *worker) execute(c *Claim) bool {
	s := w.s
	h := s.routes.lookup(c.Type)
	if h == nil {
		return s.finish(c, nil, &Failure{Code: "unknown_action", Message: fmt.Sprintf("no handler for action type %q on this node", c.Type)})
	}
	w.set(c)
	s.running.Add(1)
	res, err := w.attempts(c, h)
	s.running.Add(-1)
	w.set(nil)
	if !s.local && s.storeLife.Err() != nil {
		// The handler returned after Shutdown stopped waiting for it and
		// cancelled this worker's Store calls: the give-back, which has a
		// context of its own, is the one call left, whatever the outcome.
		if err == nil {
			s.log.Warn("an action's handler returned after shutdown gave up on it; its result is discarded and the action given back to run again", "id", c.ID)
		}
		s.release(c)
		return false
	}
	if err != nil && s.workCtx.Err() != nil {
		// Shutdown's deadline cut the handler short.
		if !s.local {
			s.release(c) // another node runs it again
			return false
		}
		// Shutdown's cut has failed it already, unless it came between
		// the claim and set: then this does.
		return s.finish(c, nil, shutdownFailure())
	}
	if err != nil {
		return s.finish(c, nil, failureOf(err))
	}
	if res, err = compact(res); err != nil {
		return s.finish(c, nil, &Failure{Code: CodeHandlerBadResult, Message: err.Error()})
	}
	return s.finish(c, res, nil)
}

// attempts calls the handler until it succeeds, fails for good or runs
// out of attempts, recording each attempt.
func (w *worker) attempts(c *Claim, h Handler) (json.RawMessage, error) {
	s := w.s
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
		s.handling.Add(1)
		res, err := invoke(s.workCtx, s.log, h, &Call{
			ID: a.ID, Type: a.Type, Topic: a.Topic, Payload: a.Payload,
			IdempotencyKey: key, Caller: a.Caller, Attempt: a.Attempts,
		})
		s.handling.Add(-1)
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

// finish records c's action as final, with result (failure == nil) or
// failure, and reports whether this call made it final: the Store makes a
// record final once, and only the caller that did publishes its result.
func (s *Service) finish(c *Claim, result json.RawMessage, failure *Failure) bool {
	a := &c.Stored
	now := time.Now().UTC()
	a.FinishedAt, a.Payload = &now, nil
	if failure != nil {
		a.Status, a.Error, a.Result = Failed, failure, nil
	} else {
		a.Status, a.Result = Succeeded, result
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	made, err := s.store.Finish(ctx, a, s.o.TTL)
	if err != nil && !s.local && s.storeLife.Err() != nil {
		// Shutdown cancelled the call: the action moves now rather than
		// when its lease runs out. If the outcome was recorded after all,
		// the next worker finds it final and only publishes it.
		s.log.Warn("failed to record an action's outcome before shutdown; giving it back", "id", a.ID, "err", err)
		s.release(c)
		return false
	}
	if err != nil {
		s.log.Error("failed to record an action's outcome; it runs again when its lease runs out", "id", a.ID, "err", err)
		return false
	}
	if !made {
		return false
	}
	if a.Status == Failed {
		s.failed.Add(1)
	} else {
		s.succeeded.Add(1)
	}
	if s.o.ObserveDuration != nil {
		s.o.ObserveDuration(a.Status, now.Sub(a.CreatedAt))
	}
	return true
}

// release gives c back to the Store for another worker, with a context of
// its own (handOverCtx): it is called at shutdown, possibly once the other
// Store calls are cancelled.
func (s *Service) release(c *Claim) {
	ctx, cancel := handOverCtx()
	defer cancel()
	if err := s.store.Release(ctx, c); err != nil {
		s.log.Warn("failed to give an action back; it moves when its lease runs out", "id", c.ID, "err", err)
	}
}

// invoke calls the handler, turning a panic into a final failure.
func invoke(ctx context.Context, log *slog.Logger, h Handler, call *Call) (res json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("action handler panicked",
				"id", call.ID, "type", call.Type, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, &Failure{Code: CodeHandlerPanic, Message: "the action's handler failed unexpectedly"}
		}
	}()
	return h.Handle(ctx, call)
}

// backoff is the delay before attempt+1: full jitter, uniform in
// [0, min(ceil, base*2^(attempt-1))].
func backoff(base, ceil time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceil; i++ {
		d *= 2
	}
	d = min(d, ceil)
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// failureOf is the Failure clients see for a handler's final error.
func failureOf(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) && f.Code != "" {
		c := *f
		return &c
	}
	code := CodeHandlerError
	if IsRetryable(err) {
		code = CodeUpstreamUnavailable
	}
	return &Failure{Code: code, Message: err.Error()}
}

// compact checks that a result is one JSON value in UTF-8 and compacts it;
// an empty result is null.
func compact(b json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return json.RawMessage("null"), nil
	}
	if !utf8.Valid(b) {
		return nil, errors.New("the result is not valid UTF-8")
	}
	// Most handlers return compact JSON (echo returns its compacted
	// payload): valid JSON with no whitespace byte anywhere is compact
	// already, and checking costs no allocation.
	if bytes.IndexAny(b, " \t\r\n") < 0 && json.Valid(b) {
		return b, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("the result is not JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// resultData and failureData are the data of action.succeeded and
// action.failed events.
type resultData struct {
	ActionID string          `json:"action_id"`
	Type     string          `json:"type"`
	Status   Status          `json:"status"`
	Result   json.RawMessage `json:"result"`
}

type failureData struct {
	ActionID string   `json:"action_id"`
	Type     string   `json:"type"`
	Status   Status   `json:"status"`
	Error    *Failure `json:"error"`
}

// settle publishes the result events of final actions, whose claims the
// caller holds, that are not published yet, then removes them from the
// queue. A publish that fails is logged: the outcome stays readable with
// Get. Done failing is logged too: the lease runs out and the next claim
// finds the action final, and only publishes it again.
func (s *Service) settle(cs ...*Claim) {
	for len(cs) > 0 {
		n := min(len(cs), publishBatch)
		drafts := make([]hub.Draft, 0, n)
		for _, c := range cs[:n] {
			if c.Published {
				continue
			}
			d, err := resultDraft(c.ID, c.Type, c.Topic, c.Status, c.Result, c.Error)
			if err != nil {
				s.log.Error("failed to encode action result", "id", c.ID, "err", err)
				continue
			}
			drafts = append(drafts, d)
		}
		if len(drafts) > 0 {
			// Not tied to Shutdown's context, which may have expired when
			// the actions it fails are published; and no deadline of its
			// own, which would cost a timer per action: every broker
			// bounds its Publish (hub.Broker).
			s.publishing.Add(1)
			_, err := s.hub.Publish(context.Background(), drafts...)
			s.publishing.Add(-1)
			if err != nil {
				s.log.Error("failed to publish action results", "actions", len(drafts), "first", cs[0].ID, "err", err)
			}
		}
		for _, c := range cs[:n] {
			ctx, cancel := s.storeCtx()
			if err := s.store.Done(ctx, c); err != nil {
				s.log.Warn("failed to remove a finished action from the queue", "id", c.ID, "err", err)
			}
			cancel()
		}
		cs = cs[n:]
	}
}

// resultDraft is the result event of a final action.
func resultDraft(id, typ, topic string, status Status, result json.RawMessage, failure *Failure) (hub.Draft, error) {
	var (
		data []byte
		err  error
		etyp = TypeSucceeded
	)
	if status == Failed {
		etyp = TypeFailed
		data, err = json.Marshal(failureData{ActionID: id, Type: typ, Status: status, Error: failure})
	} else if len(result) == 0 || json.Valid(result) {
		// resultData, encoded by hand: one per action, on the workers'
		// path. Publishing compacts the result.
		data = make([]byte, 0, 64+len(id)+len(typ)+len(result))
		data = append(data, `{"action_id":`...)
		data = jsonenc.AppendString(data, id)
		data = append(data, `,"type":`...)
		data = jsonenc.AppendString(data, typ)
		data = append(data, `,"status":`...)
		data = jsonenc.AppendString(data, string(status))
		data = append(data, `,"result":`...)
		if len(result) == 0 {
			data = append(data, "null"...)
		} else {
			data = append(data, result...)
		}
		data = append(data, '}')
	} else {
		data, err = json.Marshal(resultData{ActionID: id, Type: typ, Status: status, Result: result})
	}
	return hub.Draft{Topic: topic, Type: etyp, Data: data}, err
}
