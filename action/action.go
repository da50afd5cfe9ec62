// Package action runs client actions asynchronously: a caller submits an
// action and is answered at once (202 Accepted over HTTP), a bounded pool of
// workers runs it through a Handler, and its result is published to the
// action's topic as an event of type action.succeeded or action.failed, so
// the caller and every other subscriber learn it through the live channel.
//
// Handlers are Go code registered by type (Herald embedded as a library) or
// an upstream HTTP backend (Upstream, for the standalone binary).
//
// One runner, Service, serves every deployment: it keeps the actions in a
// Store, which is this process's memory (action/memstore) on a single node
// and Redis or NATS (action/redisstore, action/natsstore) for nodes that
// share them. Every accepted action is owed one final outcome, and the
// Store decides what Shutdown does with the actions not yet finished: see
// Service.
package action

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Event types of published results.
const (
	TypeSucceeded = "action.succeeded"
	TypeFailed    = "action.failed"
)

// Status of an action.
type Status string

// The statuses an action passes through; succeeded and failed are final.
const (
	Pending   Status = "pending"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
)

// Errors of Submit, for the transports to map onto the protocol's codes.
var (
	ErrUnknownAction       = errors.New("unknown action type")             // 422 unknown_action
	ErrIdempotencyMismatch = errors.New("idempotency key reused")          // 422 idempotency_mismatch
	ErrQueueFull           = errors.New("action queue is full")            // 503 unavailable + Retry-After
	ErrShuttingDown        = errors.New("actions are shutting down")       // 503 unavailable
	ErrUnavailable         = errors.New("the action store is unavailable") // 503 unavailable (a shared store)
)

// Request is an action as a caller submits it.
type Request struct {
	Type    string          // [A-Za-z0-9_.:-]{1,64}, not herald.*
	Topic   string          // where the result is published
	Payload json.RawMessage // any JSON; missing is null
	// IdempotencyKey, when not empty, makes a repeated submission with the
	// same key and the same body return the first action instead of running
	// again; the same key with another body is ErrIdempotencyMismatch.
	IdempotencyKey string
	// Caller scopes idempotency keys (a token's subject; empty without auth).
	Caller string
}

// requestError is a Request without a field every action needs. Its text
// is the whole message a client reads; it wraps the hub error of an invalid
// value of that field, so that transports give it the same code.
type requestError struct {
	msg  string
	kind error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.kind }

var (
	errNoType  = &requestError{`"type" is required`, hub.ErrInvalidType}
	errNoTopic = &requestError{`"topic" is required: the action's result is published there`, hub.ErrInvalidTopic}
)

// Validate checks that r has what every action needs: a type, and a topic
// to publish its result to. Transports call it first, before a caller's
// grants are looked at, so a request without them is told what it lacks
// rather than refused; Submit calls it too, then checks the values.
func (r Request) Validate() error {
	if r.Type == "" {
		return errNoType
	}
	if r.Topic == "" {
		return errNoTopic
	}
	return nil
}

// Action is a snapshot of one action's record.
type Action struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Topic      string          `json:"topic"`
	Status     Status          `json:"status"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *Failure        `json:"error,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Attempts   int             `json:"attempts"`
}

// Failure is why an action failed, as clients see it. A handler may return
// one (or wrap one) as its error to choose the code and message.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements error, so that handlers can return a *Failure.
func (f *Failure) Error() string {
	if f.Message == "" {
		return f.Code
	}
	return f.Code + ": " + f.Message
}

// Failure codes set by the service and by Upstream.
const (
	CodeHandlerError        = "handler_error"         // a handler's final error that carries no *Failure
	CodeHandlerPanic        = "handler_panic"         // the handler panicked
	CodeHandlerBadResult    = "handler_bad_result"    // the handler's result is not one JSON value
	CodeUpstreamUnavailable = "upstream_unavailable"  // retryable errors until attempts ran out
	CodeUpstreamRejected    = "upstream_rejected"     // a 4xx answer without an error body
	CodeUpstreamBadResponse = "upstream_bad_response" // a 2xx answer that is not JSON, or too large
	CodeShutdown            = "shutdown"              // the service stopped before the action finished
)

// Call is what a Handler receives.
type Call struct {
	ID             string
	Type           string
	Topic          string
	Payload        json.RawMessage // read-only: it may be the store's own copy
	IdempotencyKey string          // the caller's key, or the action ID when none was given
	Caller         string
	Attempt        int // 1 for the first attempt
}

// Handler runs actions. It returns the result (any JSON; nil means null) or
// an error. Errors are final unless wrapped with Retryable; a *Failure (or
// one wrapped) gives the code and message clients see.
type Handler interface {
	Handle(ctx context.Context, call *Call) (json.RawMessage, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, call *Call) (json.RawMessage, error)

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, call *Call) (json.RawMessage, error) {
	return f(ctx, call)
}

// MaxKeyLen is the longest idempotency key, in bytes.
const MaxKeyLen = 255

// ErrInvalidKey is returned for an idempotency key that is not 1 to
// MaxKeyLen bytes of printable ASCII (400 invalid_request).
var ErrInvalidKey = errors.New("invalid idempotency key")

// ValidateKey checks a non-empty idempotency key. HTTP's Idempotency-Key
// header and WebSocket's idempotency_key share keys, so they share the rule.
func ValidateKey(k string) error {
	if k == "" || len(k) > MaxKeyLen {
		return fmt.Errorf("%w: must be 1 to %d bytes long, got %d", ErrInvalidKey, MaxKeyLen, len(k))
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: must be printable ASCII", ErrInvalidKey)
		}
	}
	return nil
}

// Retryable marks err as transient: the service tries the action again with
// exponential backoff and jitter, up to MaxAttempts. Retryable(nil) is nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryableError{err: err}
}

// IsRetryable reports whether err was marked with Retryable.
func IsRetryable(err error) bool {
	var r *retryableError
	return errors.As(err, &r)
}

type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// Final reports whether s is an outcome: succeeded or failed.
func (s Status) Final() bool { return s == Succeeded || s == Failed }

// Options configures a Service. The zero value of each field but Hub and
// Store means its default.
type Options struct {
	Hub *hub.Hub // where results are published (required)
	// Store keeps the actions (required): action/memstore on a single
	// node, a shared store for nodes that share a broker. The caller owns
	// it, and closes it, if it must be closed, after Shutdown.
	Store Store
	// Workers is how many actions this Service runs at once; default 16.
	Workers int
	// QueueSize bounds the actions accepted and not yet done, waiting or
	// running, in the Store (across the cluster on a shared one); default
	// 10000. Past it Submit returns ErrQueueFull.
	QueueSize int
	// TTL is how long finished actions (and their idempotency keys) are
	// kept; default 1h. A store may forget them earlier, within bounds of
	// its own (memstore.Options.MaxFinished and MaxFinishedBytes).
	TTL         time.Duration
	MaxAttempts int           // attempts for retryable errors; default 5
	BackoffBase time.Duration // first retry delay (doubles each time, with jitter); default 100ms
	BackoffMax  time.Duration // longest retry delay; default 10s
	// Lease is how long a worker keeps an action it runs without renewing
	// it (it renews every Lease/3); past it, the Store gives the action to
	// another worker. Default DefaultLease.
	Lease  time.Duration
	Echo   bool // register the built-in "echo" type (result = payload); the server turns it on
	Logger *slog.Logger
	// ObserveDuration, if set, receives each action's time from acceptance
	// to its final status, as it ends. It is called from the workers (and
	// from Shutdown), concurrently, and must be safe for that.
	ObserveDuration func(Status, time.Duration)
}

// Stats counts what a Service did, for metrics. The first five are
// totals since New; Queued and Running are gauges.
type Stats struct {
	Accepted     int64 `json:"accepted"`      // actions Submit created
	Succeeded    int64 `json:"succeeded"`     // actions that ended succeeded here
	Failed       int64 `json:"failed"`        // actions that ended failed here (shutdown included)
	Retried      int64 `json:"retried"`       // attempts after the first
	RejectedFull int64 `json:"rejected_full"` // submissions refused with ErrQueueFull
	// Queued is how many actions wait for a worker, when the Store knows
	// it (QueueLen: a local store); 0 on a shared store, whose queue is
	// the cluster's.
	Queued  int64 `json:"queued"`
	Running int64 `json:"running"` // actions in status running here (also while waiting to retry)
}
