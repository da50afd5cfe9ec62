package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
)

// History page sizes: the default, and the largest a request gets (larger
// limits are clamped to it, not refused).
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

// topics serves GET /v1/topics.
func (a *api) topics(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	rows, err := a.hub.Topics(r.Context())
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	// Only what the caller may subscribe to: a name is information too.
	rows = slices.DeleteFunc(rows, func(ti hub.TopicInfo) bool {
		pat, err := hub.ParsePattern(ti.Topic)
		return err != nil || !p.MaySubscribe(pat)
	})
	if rows == nil {
		rows = []hub.TopicInfo{}
	}
	body, err := json.Marshal(struct {
		Topics []hub.TopicInfo `json:"topics"`
	}{rows})
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, append(body, '\n'))
}

// history serves GET /v1/topics/{topic}/history?after=CURSOR&limit=N.
func (a *api) history(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	topic := pathVar(r, "topic")
	if err := hub.ValidateTopic(topic); err != nil {
		apierror.WriteErr(w, err)
		return
	}
	if !p.MaySubscribe(hub.MustPattern(topic)) {
		apierror.Write(w, apierror.Denied(p, fmt.Sprintf("the history of %q", topic)))
		return
	}
	q := r.URL.Query()
	limit := DefaultHistoryLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			apierror.Write(w, apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
				"limit must be a positive integer, got "+strconv.Quote(s)))
			return
		}
		limit = min(n, MaxHistoryLimit)
	}
	msgs, err := a.hub.History(r.Context(), topic, q.Get("after"), limit)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	// The envelopes are already encoded once by the hub; splice them in.
	size := 16
	for _, m := range msgs {
		size += len(m.Envelope()) + 1
	}
	body := make([]byte, 0, size)
	body = append(body, `{"events":[`...)
	for i, m := range msgs {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, m.Envelope()...)
	}
	body = append(body, "]}\n"...)
	writeJSON(w, http.StatusOK, body)
}
