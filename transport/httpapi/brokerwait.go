package httpapi

import (
	"context"
	"net/http"
	"time"
)

// brokerWait bounds how long a request that reads the broker or the action
// store waits for it, as the hub bounds a publish: a broker that stopped
// answering gets the client a 503 in this long (apierror maps the
// deadline), rather than after the broker client's own retries of a
// command that timed out (go-redis: up to four attempts of 3 s each, with
// backoff).
const brokerWait = 5 * time.Second

// brokerContext is r's context bounded by brokerWait.
func brokerContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), brokerWait)
}
