// Package apierror writes the protocol's JSON errors,
// {"error":{"code":"snake_case_code","message":"human text"}}, and maps the
// errors of the hub and of the action service onto codes and HTTP statuses. Every transport uses it so a
// client sees one error shape everywhere.
package apierror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
)

// Codes of the wire protocol (SPEC "Errors").
const (
	InvalidJSON          = "invalid_json"
	InvalidTopic         = "invalid_topic"
	InvalidPattern       = "invalid_pattern"
	InvalidType          = "invalid_type"
	InvalidCursor        = "invalid_cursor"
	InvalidRequest       = "invalid_request"
	TooLarge             = "too_large"
	RequestTimeout       = "request_timeout"
	UnsupportedMediaType = "unsupported_media_type"
	Unauthorized         = "unauthorized"
	Forbidden            = "forbidden"
	NotFound             = "not_found"
	MethodNotAllowed     = "method_not_allowed"
	HistoryGone          = "history_gone"
	IdempotencyMismatch  = "idempotency_mismatch"
	UnknownAction        = "unknown_action"
	UnknownOp            = "unknown_op"
	RateLimited          = "rate_limited"
	Unavailable          = "unavailable"
	NotImplemented       = "not_implemented"
	Internal             = "internal"
)

// Error is a protocol error: a code clients branch on and a message people read.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// New returns an *Error.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// InvalidKey is the answer to an idempotency key that action.ValidateKey
// refused, naming where the key came from (the Idempotency-Key header, the
// "idempotency_key" field) before the reason.
func InvalidKey(where string, err error) *Error {
	return New(http.StatusBadRequest, InvalidRequest, where+" "+strings.TrimPrefix(err.Error(), action.ErrInvalidKey.Error()+": "))
}

// Body is the JSON document of an error response.
type Body struct {
	Error *Error `json:"error"`
}

// Write sends e as a JSON error response.
func Write(w http.ResponseWriter, e *Error) {
	b, _ := json.Marshal(Body{Error: e})
	SetJSONHeaders(w.Header())
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(b, '\n'))
}

// The header values of every JSON answer. The slices are shared by all
// responses and never modified: Header.Set replaces a value slice and
// Header.Add appends to one whose capacity is full, so neither writes into
// them. Three Header.Set calls would allocate three slices per response.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noSniff         = []string{"nosniff"}
)

// SetJSONHeaders sets the headers of a JSON answer: its content type, and
// that it must be neither cached nor sniffed.
func SetJSONHeaders(h http.Header) {
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = noSniff
}

// Denied is the refusal of something p's grants do not allow: 401 when the
// request had no credentials (a token would help), 403 otherwise. what says
// what was refused, e.g. `subscribing to "news.>"`.
func Denied(p *auth.Principal, what string) *Error {
	if p.CookieIgnored() {
		if wanted := p.Wanted(); wanted != "a token" {
			return New(http.StatusUnauthorized, Unauthorized, wanted+" is required for "+what+
				"; cookies do not count on a request from a page of another origin unless --cors-origins or --allowed-origins names it exactly")
		}
		return New(http.StatusUnauthorized, Unauthorized, "a token is required for "+what+
			"; the herald_token cookie does not count on a request from a page of another origin: send the token in Authorization or access_token")
	}
	if p.Anonymous() {
		return New(http.StatusUnauthorized, Unauthorized, p.Wanted()+" is required for "+what)
	}
	if p.APIKey() {
		return New(http.StatusForbidden, Forbidden, "the API key does not grant "+what+
			": it publishes, reads /v1/stats and uses the control API; what a user does needs the user's token")
	}
	if p.Upstream() {
		return New(http.StatusForbidden, Forbidden, "the application (auth upstream) does not grant "+what)
	}
	return New(http.StatusForbidden, Forbidden, "the token does not grant "+what)
}

// WriteRateLimited answers 429 rate_limited with Retry-After: the caller
// has used its rate for what (e.g. "publishing") and may try again after
// wait.
func WriteRateLimited(w http.ResponseWriter, what string, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(limit.RetryAfter(wait)))
	Write(w, New(http.StatusTooManyRequests, RateLimited, "too many requests for "+what+"; retry after "+strconv.Itoa(limit.RetryAfter(wait))+" s"))
}

// WriteErr maps err with From and writes it, with Retry-After when err is
// one to retry (see RetryAfter).
func WriteErr(w http.ResponseWriter, err error) {
	if v, ok := RetryAfter(err); ok {
		w.Header().Set("Retry-After", v)
	}
	Write(w, From(err))
}

// From maps an error from the hub or the action service (or an *Error)
// onto a protocol error. Unknown errors become 500 "internal" without
// leaking their text.
//
// The 503s of a full action queue, of actions shutting down, of a broker
// and of a JWKS that cannot be reached are meant to be retried: WriteErr adds
// Retry-After (see RetryAfter).
func From(err error) *Error {
	var e *Error
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, limit.ErrTooManyConns):
		return New(http.StatusServiceUnavailable, Unavailable, err.Error())
	case errors.Is(err, limit.ErrTooManyFromIP):
		return New(http.StatusTooManyRequests, RateLimited, err.Error())
	case errors.Is(err, auth.ErrUnavailable):
		return New(http.StatusServiceUnavailable, Unavailable, err.Error())
	case errors.Is(err, auth.ErrUnauthorized):
		return New(http.StatusUnauthorized, Unauthorized, err.Error())
	case errors.As(err, &maxBytes):
		return New(http.StatusRequestEntityTooLarge, TooLarge, "request body is too large")
	case errors.Is(err, hub.ErrInvalidTopic):
		return New(http.StatusBadRequest, InvalidTopic, err.Error())
	case errors.Is(err, hub.ErrInvalidPattern):
		return New(http.StatusBadRequest, InvalidPattern, err.Error())
	case errors.Is(err, hub.ErrInvalidType):
		return New(http.StatusBadRequest, InvalidType, err.Error())
	case errors.Is(err, hub.ErrInvalidKey):
		return New(http.StatusBadRequest, InvalidRequest, err.Error())
	case errors.Is(err, hub.ErrInvalidData):
		return New(http.StatusBadRequest, InvalidJSON, err.Error())
	case errors.Is(err, hub.ErrBadCursor):
		return New(http.StatusBadRequest, InvalidCursor, err.Error())
	case errors.Is(err, hub.ErrInvalidControl):
		return New(http.StatusBadRequest, InvalidRequest, err.Error())
	case errors.Is(err, hub.ErrInvalidPresence):
		return New(http.StatusBadRequest, InvalidRequest, err.Error())
	case errors.Is(err, hub.ErrPresenceUnsupported):
		return New(http.StatusNotImplemented, NotImplemented, "the broker of this server keeps no presence")
	case errors.Is(err, hub.ErrInvalidRewind), errors.Is(err, hub.ErrInvalidDelta), errors.Is(err, hub.ErrInvalidConflate):
		return New(http.StatusBadRequest, InvalidRequest, err.Error())
	case errors.Is(err, hub.ErrHistoryGone):
		return New(http.StatusGone, HistoryGone, "the requested events are no longer retained")
	case errors.Is(err, action.ErrUnknownAction):
		return New(http.StatusUnprocessableEntity, UnknownAction, err.Error())
	case errors.Is(err, action.ErrIdempotencyMismatch):
		return New(http.StatusUnprocessableEntity, IdempotencyMismatch,
			"this Idempotency-Key was already used for an action with another type, topic or payload")
	case errors.Is(err, action.ErrInvalidKey):
		return New(http.StatusBadRequest, InvalidRequest, err.Error())
	case errors.Is(err, action.ErrQueueFull):
		return New(http.StatusServiceUnavailable, Unavailable, "the action queue is full; retry later")
	case errors.Is(err, action.ErrShuttingDown):
		return New(http.StatusServiceUnavailable, Unavailable, "the server is shutting down and accepts no new actions")
	case errors.Is(err, action.ErrUnavailable):
		return New(http.StatusServiceUnavailable, Unavailable, "actions are unavailable: the server cannot reach its broker")
	case errors.Is(err, hub.ErrStateUnsupported):
		// Not a 503: retrying will not help, the broker does not do it.
		return New(http.StatusNotImplemented, NotImplemented, "the broker of this server keeps no state of keyed topics")
	case errors.Is(err, hub.ErrUnconfirmed):
		return New(http.StatusServiceUnavailable, Unavailable,
			"the broker did not confirm the publish in time: it may or may not have been published")
	case errors.Is(err, hub.ErrUnavailable):
		return New(http.StatusServiceUnavailable, Unavailable, "the server cannot reach its broker; retry later")
	case errors.Is(err, context.DeadlineExceeded):
		// A request's own wait for the broker or a store, ended by its
		// bound: what hung is a dependency, not this server.
		return New(http.StatusServiceUnavailable, Unavailable, "the server's broker did not answer in time; retry later")
	case errors.Is(err, hub.ErrGoingAway), errors.Is(err, hub.ErrClosed):
		return New(http.StatusServiceUnavailable, Unavailable, "the server is not accepting this request now")
	default:
		return New(http.StatusInternalServerError, Internal, "internal error")
	}
}

// RetryAfter is the Retry-After value, in seconds, that WriteErr sends
// with the 503 of a full action queue, of actions shutting down or of a
// broker that cannot be reached, and whether err is one of those. A queue
// drains within moments; a node that is shutting down, or cut off from its
// broker, is taken out of a load balancer's rotation by /readyz within
// about as long. A token whose key the JWKS could not be fetched for is
// told when the next fetch may be made.
func RetryAfter(err error) (string, bool) {
	var jwks *auth.UnavailableError
	if errors.As(err, &jwks) {
		return strconv.Itoa(limit.RetryAfter(jwks.RetryAfter)), true
	}
	if errors.Is(err, action.ErrQueueFull) || errors.Is(err, action.ErrShuttingDown) ||
		errors.Is(err, action.ErrUnavailable) || errors.Is(err, hub.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return "1", true
	}
	return "", false
}
