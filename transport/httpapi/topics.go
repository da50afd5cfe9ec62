package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
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
	ctx, cancel := brokerContext(r)
	defer cancel()
	rows, err := a.hub.Topics(ctx)
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
	topic, ok := a.readableTopic(w, r, "the history")
	if !ok {
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
	ctx, cancel := brokerContext(r)
	defer cancel()
	msgs, err := a.hub.History(ctx, topic, q.Get("after"), limit)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	writeEvents(w, msgs)
}

// maxCopiedPage is the largest page of history answered from one buffer;
// a larger one is written envelope by envelope from the events
// themselves, so that a request copies at most this much: a page may hold
// up to 1000 events of up to --max-body each, and concurrent requests for
// it would each hold a copy.
const maxCopiedPage = 1 << 20

// writeEvents answers {"events":[…]} with msgs.
func writeEvents(w http.ResponseWriter, msgs []*hub.Message) {
	size := eventsSize(msgs)
	// The length is known: no chunked encoding.
	w.Header().Set("Content-Length", strconv.Itoa(len(`{"events":[`)+size-min(len(msgs), 1)+len("]}\n")))
	if size+16 <= maxCopiedPage {
		writeJSON(w, http.StatusOK, appendEvents(append(make([]byte, 0, size+16), '{'), msgs))
		return
	}
	apierror.SetJSONHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, `{"events":[`); err != nil {
		return
	}
	for i, m := range msgs {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return
			}
		}
		if _, err := w.Write(m.Envelope()); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, "]}\n")
}

// state serves GET /v1/topics/{topic}/state: the latest event of each key,
// exact at the position "id".
func (a *api) state(w http.ResponseWriter, r *http.Request) {
	topic, ok := a.readableTopic(w, r, "the state")
	if !ok {
		return
	}
	ctx, cancel := brokerContext(r)
	defer cancel()
	st, err := a.hub.State(ctx, topic)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	body := make([]byte, 0, eventsSize(st.Events)+len(st.Last.Epoch)+48)
	body = append(body, `{"id":"`...)
	body = st.Last.AppendText(body)
	body = append(body, `",`...)
	writeJSON(w, http.StatusOK, appendEvents(body, st.Events))
}

// presence serves GET /v1/topics/{topic}/presence: the topic's members,
// exact at the position "id", and how many connections and users they are.
func (a *api) presence(w http.ResponseWriter, r *http.Request) {
	topic, ok := a.readableTopic(w, r, "the presence")
	if !ok {
		return
	}
	ctx, cancel := brokerContext(r)
	defer cancel()
	p, err := a.hub.Presence(ctx, topic)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	n := len(p.Last.Epoch) + 96
	for _, m := range p.Members {
		n += len(m) + 1
	}
	body := make([]byte, 0, n)
	body = append(body, `{"id":"`...)
	body = p.Last.AppendText(body)
	body = append(body, `","members":[`...)
	for i, m := range p.Members {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, m...)
	}
	body = append(body, `],"clients":`...)
	body = strconv.AppendInt(body, int64(p.Clients), 10)
	body = append(body, `,"users":`...)
	body = strconv.AppendInt(body, int64(p.Users), 10)
	writeJSON(w, http.StatusOK, append(body, "}\n"...))
}

// readableTopic reads the {topic} of a read of one topic (its history, its
// state), which needs the grant to subscribe to it. On false it has
// written the error; what names the read in a refusal.
func (a *api) readableTopic(w http.ResponseWriter, r *http.Request, what string) (string, bool) {
	p, ok := a.principal(w, r)
	if !ok {
		return "", false
	}
	topic := pathVar(r, "topic")
	if err := hub.ValidateTopic(topic); err != nil {
		apierror.WriteErr(w, err)
		return "", false
	}
	if !p.MaySubscribe(hub.MustPattern(topic)) {
		apierror.Write(w, apierror.Denied(p, fmt.Sprintf("%s of %q", what, topic)))
		return "", false
	}
	return topic, true
}

// eventsSize is what appendEvents adds besides its constant parts.
func eventsSize(msgs []*hub.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Envelope()) + 1
	}
	return n
}

// appendEvents ends a JSON object with "events":[…] and a newline. The
// envelopes are already encoded once by the hub; it splices them in.
func appendEvents(body []byte, msgs []*hub.Message) []byte {
	body = append(body, `"events":[`...)
	for i, m := range msgs {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, m.Envelope()...)
	}
	return append(body, "]}\n"...)
}
