package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/internal/jsonenc"
	"github.com/heraldpush/herald/limit"
)

// actionsPath is where actions are submitted; an action's status lives
// under it, at actionsPath/ID.
const actionsPath = "/v1/actions"

// actionJSON is the body of POST /v1/actions. Unknown fields are ignored,
// as for publish.
type actionJSON struct {
	Type    string          `json:"type"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
}

// submitAction serves POST /v1/actions. A new action is answered 202 with
// Location; an idempotent repeat is answered 200 with the first action's
// current status, so a client can tell the two apart.
func (a *api) submitAction(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	if err := checkJSONContentType(r); err != nil {
		apierror.Write(w, err)
		return
	}
	key, kerr := idempotencyKey(r.Header)
	if kerr != nil {
		apierror.Write(w, kerr)
		return
	}
	body, berr := a.readJSONBody(w, r)
	if berr != nil {
		apierror.Write(w, berr)
		return
	}
	req, perr := parseAction(body)
	if perr != nil {
		apierror.Write(w, perr)
		return
	}
	if err := req.Validate(); err != nil {
		apierror.WriteErr(w, err)
		return
	}
	if !p.MayAct(req.Type) {
		apierror.Write(w, apierror.Denied(p, fmt.Sprintf("actions of type %q", req.Type)))
		return
	}
	if ok, wait := a.actionRates.Allow(limit.Key(p.Subject, r), 1); !ok {
		apierror.WriteRateLimited(w, "actions", wait)
		return
	}
	req.IdempotencyKey = key
	req.Caller = p.Subject
	act, created, err := a.actions.Submit(r.Context(), req)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	loc := actionURL(act.ID)
	w.Header().Set("Location", loc)
	if !created {
		a.writeAction(w, act)
		return
	}
	// The action was queued just now: whatever a worker has done with it
	// since, the client is told the state it was accepted in.
	// {"id","status","status_url"}, encoded by hand: this answer is the
	// hot path.
	out := make([]byte, 0, 40+len(act.ID)+len(loc)+len(action.Pending))
	out = append(out, `{"id":`...)
	out = jsonenc.AppendString(out, act.ID)
	out = append(out, `,"status":`...)
	out = jsonenc.AppendString(out, string(action.Pending))
	out = append(out, `,"status_url":`...)
	out = jsonenc.AppendString(out, loc)
	out = append(out, "}\n"...)
	writeJSON(w, http.StatusAccepted, out)
}

// getAction serves GET /v1/actions/{id}.
func (a *api) getAction(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	id := pathVar(r, "id")
	ctx, cancel := brokerContext(r)
	defer cancel()
	act, ok, err := a.actions.Get(ctx, id)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	if ok && !p.MayAct(act.Type) {
		apierror.Write(w, apierror.Denied(p, fmt.Sprintf("actions of type %q", act.Type)))
		return
	}
	if !ok {
		if len(id) > 64 {
			id = id[:64] + "…"
		}
		apierror.Write(w, apierror.New(http.StatusNotFound, apierror.NotFound,
			fmt.Sprintf("no action %q (unknown, or finished longer ago than the server keeps actions)", id)))
		return
	}
	a.writeAction(w, act)
}

// writeAction answers 200 with an action's status document.
func (a *api) writeAction(w http.ResponseWriter, act action.Action) {
	out, err := json.Marshal(act)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, append(out, '\n'))
}

// actionURL is the relative URL of an action's status, used both in
// Location and in status_url.
func actionURL(id string) string { return actionsPath + "/" + url.PathEscape(id) }

// parseAction decodes an action body. It checks what only the transport
// knows, the JSON; Request.Validate and the service check the fields.
func parseAction(body []byte) (action.Request, *apierror.Error) {
	if !utf8.Valid(body) {
		return action.Request{}, badJSON("request body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return action.Request{}, badJSON("request body must be a JSON object")
	}
	if o, ok := parseFlatObject(body, "payload"); ok && o.typ != "" && o.topic != "" && (!o.hasRaw || json.Valid(o.raw)) {
		return action.Request{Type: o.typ, Topic: o.topic, Payload: o.raw}, nil
	}
	return decodeAction(body)
}

// decodeAction is parseAction with encoding/json, for any body.
func decodeAction(body []byte) (action.Request, *apierror.Error) {
	var in actionJSON
	if err := json.Unmarshal(body, &in); err != nil {
		return action.Request{}, badJSON(describeJSONError(err))
	}
	return action.Request{Type: in.Type, Topic: in.Topic, Payload: in.Payload}, nil
}

// idempotencyKey returns the request's Idempotency-Key, or "" when it has
// none. A key is 1 to action.MaxKeyLen bytes of printable ASCII (space
// included, though HTTP trims it at both ends); anything else, or the header
// given twice, is 400 invalid_request rather than silently running the
// action without the protection the client asked for.
func idempotencyKey(h http.Header) (string, *apierror.Error) {
	vals := h.Values("Idempotency-Key")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
			"give at most one Idempotency-Key header")
	}
	k := vals[0]
	if err := action.ValidateKey(k); err != nil {
		return "", apierror.InvalidKey("Idempotency-Key", err)
	}
	return k, nil
}
