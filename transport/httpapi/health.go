package httpapi

import (
	"context"
	"encoding/json"
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

// SourceStatus is what GET /readyz says of an event source: its name, its
// state (consuming, standby, connecting or unavailable) and, when
// unavailable, why.
type SourceStatus struct {
	Source string `json:"source"`
	State  string `json:"state"`
	Error  string `json:"error,omitempty"`
}

// readyz serves GET /readyz: the hub accepts work and its broker answers.
// Event sources are reported but do not make the node unready: without
// its database a source's rows wait, while the node still serves its
// subscribers and publishers. Any source unavailable makes the status
// "degraded".
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
	if a.sources == nil {
		writeJSON(w, http.StatusOK, statusOK)
		return
	}
	body := struct {
		Status  string         `json:"status"`
		Sources []SourceStatus `json:"sources"`
	}{Status: "ok", Sources: a.sources()}
	for _, s := range body.Sources {
		if s.State == "unavailable" {
			body.Status = "degraded"
		}
	}
	b, _ := json.Marshal(body)
	writeJSON(w, http.StatusOK, append(b, '\n'))
}
