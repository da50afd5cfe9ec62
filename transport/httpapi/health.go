package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
)

// readyTimeout bounds the broker check of /readyz, so a hung broker makes
// the probe fail rather than hang.
const readyTimeout = 2 * time.Second

var statusOK = []byte("{\"status\":\"ok\"}\n")

// healthz serves GET /healthz: the process is up and serving HTTP.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statusOK)
}

// readyz serves GET /readyz: the hub accepts work and its broker answers.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := a.hub.Ready(ctx); err != nil {
		msg := "the broker is not reachable"
		if errors.Is(err, hub.ErrGoingAway) {
			msg = "the server is shutting down"
		}
		apierror.Write(w, apierror.New(http.StatusServiceUnavailable, apierror.Unavailable, msg))
		return
	}
	writeJSON(w, http.StatusOK, statusOK)
}
