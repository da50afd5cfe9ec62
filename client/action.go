package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Types of the events that carry an action's result.
const (
	TypeActionSucceeded = "action.succeeded"
	TypeActionFailed    = "action.failed"
)

// ActionOptions configure an action.
type ActionOptions struct {
	// IdempotencyKey makes a repeat of the same action (same key, type,
	// topic and payload) return the first one instead of running again.
	IdempotencyKey string
	// NoSubscribe skips the subscription to the action's topic: Wait then
	// polls the action's status. For callers that may not subscribe to
	// the topic, or that do not call Wait.
	NoSubscribe bool
}

// ActionResult is a finished action.
type ActionResult struct {
	ID     string
	Type   string
	Topic  string
	Status string          // "succeeded" or "failed"
	Result json.RawMessage // the handler's result, when succeeded
	Error  *ActionError    // why it failed, when failed
}

// ActionError is why an action failed.
type ActionError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *ActionError) Error() string { return e.Code + ": " + e.Message }

// ActionHandle is a submitted action. Call Wait or Close once done with it:
// it holds a subscription to the action's topic. Its methods are safe for
// concurrent use.
type ActionHandle struct {
	ID string // the action's ID (the first action's, for an idempotent repeat)

	c      *Client
	topic  string
	sub    *Subscription // nil: Wait polls
	cancel context.CancelFunc

	mu    sync.Mutex
	final *ActionResult
}

// Action submits an action (POST /v1/actions): typ names the handler,
// topic is where its result event is published, payload is encoded with
// encoding/json (a json.RawMessage goes as it is). Unless
// opts.NoSubscribe, it first subscribes to topic, so that Wait sees the
// result event however fast the action runs.
func (c *Client) Action(ctx context.Context, typ, topic string, payload any, opts *ActionOptions) (*ActionHandle, error) {
	var o ActionOptions
	if opts != nil {
		o = *opts
	}
	body, err := json.Marshal(struct {
		Type    string `json:"type"`
		Topic   string `json:"topic"`
		Payload any    `json:"payload,omitempty"`
	}{typ, topic, payload})
	if err != nil {
		return nil, fmt.Errorf("failed to encode action: %w", err)
	}
	h := &ActionHandle{c: c, topic: topic}
	if !o.NoSubscribe {
		// The subscription lives until Wait or Close, not just for ctx;
		// ctx bounds only its start.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		sub, err := c.Subscribe(sctx, []string{topic}, &SubscribeOptions{Buffer: 16})
		stop()
		switch {
		case err == nil:
			h.sub, h.cancel = sub, cancel
		case ctx.Err() != nil:
			cancel()
			return nil, fmt.Errorf("failed to submit action: %w", ctx.Err())
		default:
			// Not allowed to subscribe, say: Wait polls instead.
			cancel()
			c.log.Debug("action: waiting by polling", "topic", topic, "err", err)
		}
	}
	var hdr http.Header
	if o.IdempotencyKey != "" {
		hdr = http.Header{"Idempotency-Key": {o.IdempotencyKey}}
	}
	status, b, err := c.do(ctx, http.MethodPost, "/v1/actions", body, hdr)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("failed to submit action: %w", err)
	}
	doc, err := readStatus(b)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("failed to submit action: %w", err)
	}
	h.ID = doc.ID
	if status == http.StatusOK && doc.final() {
		// An idempotent repeat of a finished action: its result event was
		// published long ago.
		h.final = doc.result()
	}
	return h, nil
}

// Close releases the handle's subscription. It returns nil.
func (h *ActionHandle) Close() error {
	if h.sub != nil {
		h.sub.Close()
		h.cancel()
	}
	return nil
}

// Wait returns the action's result once it has finished: from its result
// event on the action's topic, or from its status (GET /v1/actions/{id})
// when the event could have been missed (the subscription was reset or
// ended) or there is no subscription. A failed action is a result with
// Status "failed", not an error. Wait releases the handle's subscription
// when it returns with a result.
func (h *ActionHandle) Wait(ctx context.Context) (*ActionResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.final != nil {
		h.Close()
		return h.final, nil
	}
	if h.sub != nil {
		r, err := h.fromEvents(ctx)
		if err != nil {
			return nil, err
		}
		if r != nil {
			h.final = r
			h.Close()
			return r, nil
		}
	}
	r, err := h.poll(ctx)
	if err != nil {
		return nil, err
	}
	h.final = r
	h.Close()
	return r, nil
}

// fromEvents reads the subscription until the result event; nil, nil
// means it could have been missed.
func (h *ActionHandle) fromEvents(ctx context.Context) (*ActionResult, error) {
	want := []byte(`"action_id":` + quote(h.ID))
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("failed to wait for action %s: %w", h.ID, ctx.Err())
		case m, ok := <-h.sub.C():
			if !ok {
				return nil, nil
			}
			if m.Kind == KindReset {
				return nil, nil
			}
			e := m.Event
			if m.Kind != KindEvent || (e.Type != TypeActionSucceeded && e.Type != TypeActionFailed) ||
				!bytes.Contains(e.Data, want) {
				continue
			}
			var d struct {
				ActionID string          `json:"action_id"`
				Type     string          `json:"type"`
				Status   string          `json:"status"`
				Result   json.RawMessage `json:"result"`
				Error    *ActionError    `json:"error"`
			}
			if json.Unmarshal(e.Data, &d) != nil || d.ActionID != h.ID {
				continue
			}
			return &ActionResult{ID: h.ID, Type: d.Type, Topic: e.Topic, Status: d.Status, Result: d.Result, Error: d.Error}, nil
		}
	}
}

// poll reads the action's status, 50 ms apart at first and then doubling
// up to 1 s, until it is final.
func (h *ActionHandle) poll(ctx context.Context) (*ActionResult, error) {
	delay := 50 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("failed to wait for action %s: %w", h.ID, ctx.Err())
		case <-t.C:
		}
		st, err := h.c.ActionStatus(ctx, h.ID)
		if err != nil {
			return nil, fmt.Errorf("failed to wait: %w", err)
		}
		if st.Final() {
			return &st.ActionResult, nil
		}
		t.Reset(delay)
		delay = min(2*delay, time.Second)
	}
}

// statusDoc is an action's status document.
type statusDoc struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Topic  string          `json:"topic"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
	Error  *ActionError    `json:"error"`
}

func readStatus(b []byte) (statusDoc, error) {
	var d statusDoc
	if err := json.Unmarshal(b, &d); err != nil || d.ID == "" {
		return d, fmt.Errorf("unexpected answer %.200q", b)
	}
	return d, nil
}

func (d statusDoc) final() bool { return d.Status == "succeeded" || d.Status == "failed" }

func (d statusDoc) result() *ActionResult {
	return &ActionResult{ID: d.ID, Type: d.Type, Topic: d.Topic, Status: d.Status, Result: d.Result, Error: d.Error}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ActionStatus is an action's status document.
type ActionStatus struct {
	ActionResult
	CreatedAt  time.Time
	FinishedAt time.Time // zero until finished
	// Raw is the document as the server sent it.
	Raw json.RawMessage
}

// Final reports whether the action has finished.
func (s *ActionStatus) Final() bool { return s.Status == "succeeded" || s.Status == "failed" }

// ActionStatus reads an action's status (GET /v1/actions/{id}): "pending",
// "running", "succeeded" or "failed".
func (c *Client) ActionStatus(ctx context.Context, id string) (*ActionStatus, error) {
	_, b, err := c.do(ctx, http.MethodGet, "/v1/actions/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to read action %s: %w", id, err)
	}
	var d struct {
		statusDoc
		CreatedAt  time.Time  `json:"created_at"`
		FinishedAt *time.Time `json:"finished_at"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.ID == "" {
		return nil, fmt.Errorf("failed to read action %s: unexpected answer %.200q", id, b)
	}
	s := &ActionStatus{ActionResult: *d.result(), CreatedAt: d.CreatedAt, Raw: b}
	if d.FinishedAt != nil {
		s.FinishedAt = *d.FinishedAt
	}
	return s, nil
}
