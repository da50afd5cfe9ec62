package apierror_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFromActionErrors checks the codes, statuses and Retry-After of the
// action service's and the brokers' errors, as they are returned (wrapped).
func TestFromActionErrors(t *testing.T) {
	cases := []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{fmt.Errorf("%w %q", action.ErrUnknownAction, "todo.add"), http.StatusUnprocessableEntity, apierror.UnknownAction, ""},
		{fmt.Errorf("%w: key", action.ErrIdempotencyMismatch), http.StatusUnprocessableEntity, apierror.IdempotencyMismatch, ""},
		{action.ErrQueueFull, http.StatusServiceUnavailable, apierror.Unavailable, "1"},
		{fmt.Errorf("failed to submit: %w", action.ErrShuttingDown), http.StatusServiceUnavailable, apierror.Unavailable, "1"},
		{fmt.Errorf("bad: %w", hub.ErrInvalidType), http.StatusBadRequest, apierror.InvalidType, ""},
		{hub.ErrGoingAway, http.StatusServiceUnavailable, apierror.Unavailable, ""},
		// A broker that cannot be reached, as the brokers wrap it.
		{fmt.Errorf("failed to publish: %w", hub.Unavailable(errors.New("dial tcp: connection refused"))), http.StatusServiceUnavailable, apierror.Unavailable, "1"},
		{fmt.Errorf("failed to publish: %w", hub.ErrUnconfirmed), http.StatusServiceUnavailable, apierror.Unavailable, "1"},
		{errors.New("secret detail"), http.StatusInternalServerError, apierror.Internal, ""},
		// A broker that keeps no state: retrying will not help.
		{fmt.Errorf("failed to read state: %w", hub.ErrStateUnsupported), http.StatusNotImplemented, apierror.NotImplemented, ""},
	}
	for _, tc := range cases {
		e := apierror.From(tc.err)
		if e.Status != tc.status || e.Code != tc.code || e.Message == "" {
			t.Errorf("From(%v) = %d %s %q, want %d %s with a message", tc.err, e.Status, e.Code, e.Message, tc.status, tc.code)
		}
		ra, ok := apierror.RetryAfter(tc.err)
		if ra != tc.retryAfter || ok != (tc.retryAfter != "") {
			t.Errorf("RetryAfter(%v) = %q, %v; want %q", tc.err, ra, ok, tc.retryAfter)
		}
	}
	if e := apierror.From(errors.New("secret detail")); e.Message != "internal error" {
		t.Errorf("an unknown error leaks its text: %q", e.Message)
	}
}

// TestInvalidKey: a refused idempotency key is 400 invalid_request, and the
// message names where the key came from and why, without the sentinel's
// words in between.
func TestInvalidKey(t *testing.T) {
	err := action.ValidateKey(strings.Repeat("k", action.MaxKeyLen+1))
	got := apierror.InvalidKey("Idempotency-Key", err)
	want := fmt.Sprintf("Idempotency-Key must be 1 to %d bytes long, got %d", action.MaxKeyLen, action.MaxKeyLen+1)
	if got.Status != http.StatusBadRequest || got.Code != apierror.InvalidRequest || got.Message != want {
		t.Fatalf("got %d %s %q, want 400 invalid_request %q", got.Status, got.Code, got.Message, want)
	}
}
