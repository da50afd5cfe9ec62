package httpapi

import (
	"encoding/json"
	"github.com/heraldpush/herald/apierror"
	"net/http"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
)

// statsJSON is the body of GET /v1/stats: every counter of the node in one
// document, for dashboards and for the metrics exporter to read.
type statsJSON struct {
	Hub     hub.Stats     `json:"hub"`
	Actions *action.Stats `json:"actions,omitempty"` // absent when actions are off
}

// stats serves GET /v1/stats.
func (a *api) stats(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	// Counters, not events: any credentials read them, a user's token (the
	// dashboard) or the backend's API key, as Centrifugo's API key reads
	// its node info.
	if a.auth != nil && p.Anonymous() {
		apierror.Write(w, apierror.Denied(p, "the server's statistics"))
		return
	}
	body := statsJSON{Hub: a.hub.Stats()}
	if a.actions != nil {
		st := a.actions.Stats()
		body.Actions = &st
	}
	b, err := json.Marshal(body)
	if err != nil {
		// Counters always marshal; this would be a programming error.
		panic(err)
	}
	writeJSON(w, http.StatusOK, append(b, '\n'))
}
