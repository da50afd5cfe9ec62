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
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/jsonenc"
)

const (
	// publishTimeout bounds one publish of results. It is not tied to
	// Shutdown's context, which may have expired when the actions it fails
	// are published.
	publishTimeout = 10 * time.Second
	// publishBatch is how many results go into one hub.Publish when many
	// finish at once (Shutdown).
	publishBatch = 256
)

// work is one worker: it runs queued actions one at a time. The Service
// owns it; it ends once Shutdown has closed quit and its current action is
// done, and the last worker to end closes idle.
func (s *Service) work() {
	defer func() {
		if s.live.Add(-1) == 0 {
			close(s.idle)
		}
	}()
	for {
		select {
		case <-s.quit:
			return
		case r := <-s.queue:
			s.queued.Add(-1)
			s.run(r)
		}
	}
}

// run takes r through its attempts to a final status, then publishes it.
func (s *Service) run(r *record) {
	select {
	case <-s.quit:
		// Shutdown began after r was taken off the queue: it has not
		// started, so it fails like the rest of the queue.
		s.finish(r, nil, shutdownFailure())
		return
	default:
	}
	s.mu.Lock()
	if r.status != Pending {
		s.mu.Unlock()
		return
	}
	r.status = Running
	s.running.Add(1)
	payload := r.payload
	s.mu.Unlock()

	key := r.key
	if key == "" {
		key = r.id
	}
	var (
		res json.RawMessage
		err error
	)
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		if r.status.Final() { // failed by Shutdown
			s.mu.Unlock()
			return
		}
		r.attempts = attempt
		s.mu.Unlock()
		res, err = invoke(s.workCtx, s.log, r.handler, &Call{
			ID:             r.id,
			Type:           r.typ,
			Topic:          r.topic,
			Payload:        payload,
			IdempotencyKey: key,
			Caller:         r.caller,
			Attempt:        attempt,
		})
		if err == nil || !IsRetryable(err) || attempt >= s.maxAttempts {
			break
		}
		if !s.pause(backoff(s.backoffBase, s.backoffMax, attempt)) {
			return // Shutdown's deadline: it has failed r already
		}
		s.retried.Add(1)
	}
	if err != nil {
		s.finish(r, nil, failureOf(err))
		return
	}
	res, err = compact(res)
	if err != nil {
		s.finish(r, nil, &Failure{Code: CodeHandlerBadResult, Message: err.Error()})
		return
	}
	s.finish(r, res, nil)
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

// pause waits d, or reports false when Shutdown's deadline cut it short.
func (s *Service) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.workCtx.Done():
		return false
	}
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
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("the result is not JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// finish makes r final and, if this call did, publishes its result.
func (s *Service) finish(r *record, result json.RawMessage, failure *Failure) {
	s.mu.Lock()
	done := s.finalizeLocked(r, result, failure)
	s.mu.Unlock()
	if done {
		s.publish(r)
	}
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

// publish sends the result events of final records, which the calling
// goroutine made final (so their outcome fields no longer change). A publish
// that fails is logged: the outcome stays readable with Get.
func (s *Service) publish(rs ...*record) {
	for len(rs) > 0 {
		n := min(len(rs), publishBatch)
		drafts := make([]hub.Draft, 0, n)
		for _, r := range rs[:n] {
			d, err := r.draft()
			if err != nil {
				s.log.Error("failed to encode action result", "id", r.id, "err", err)
				continue
			}
			drafts = append(drafts, d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		if _, err := s.hub.Publish(ctx, drafts...); err != nil {
			s.log.Error("failed to publish action results", "actions", len(drafts), "first", rs[0].id, "err", err)
		}
		cancel()
		rs = rs[n:]
	}
}

// draft is r's result event. r is final.
func (r *record) draft() (hub.Draft, error) {
	return resultDraft(r.id, r.typ, r.topic, r.status, r.result, r.failure)
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
