package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
)

// api holds what the JSON handlers share. It is immutable after NewRouter.
type api struct {
	hub         *hub.Hub
	actions     action.Runner // nil: the action routes are not mounted
	maxBody     int64
	maxBatch    int
	readTimeout time.Duration       // for a body to arrive (withBodyDeadline)
	auth        *auth.Authenticator // nil: no authentication

	publishRates, actionRates *limit.Rates // nil: unlimited
	sources                   func() []SourceStatus
}

// principal authenticates r: auth.Everyone when authentication is off. On
// failure it has answered 401 and reports false. A herald_token cookie
// from a page of another origin is no credential (auth.Config.CookieOrigins).
func (a *api) principal(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	if a.auth == nil {
		return auth.Everyone, true
	}
	p, err := a.auth.Request(r)
	if err != nil {
		apierror.WriteErr(w, err)
		return nil, false
	}
	return p, true
}

// eventJSON is one event as a publisher sends it. Unknown fields are
// ignored, as Centrifugo does, so clients may send extra metadata.
type eventJSON struct {
	Topic *string         `json:"topic"`
	Type  *string         `json:"type"`
	Key   *string         `json:"key"`
	Data  json.RawMessage `json:"data"`
}

// publishJSON is the body of POST /v1/publish: one event, or a batch in
// Events. Events is kept raw so that its presence (even as null) is seen.
type publishJSON struct {
	eventJSON
	Events json.RawMessage `json:"events"`
}

// preallocMax is the largest body readJSONBody reads into a buffer of the
// announced Content-Length. A larger body grows its buffer as it arrives,
// so that a client announcing a megabyte and sending one byte costs about
// a byte, not a megabyte, for as long as the read timeout lets it wait.
const preallocMax = 64 << 10

// readJSONBody checks that r carries JSON and reads its body, at most
// maxBody bytes: 415 for another content type, 413 for a larger body, 408
// for one that did not arrive in time (withBodyDeadline).
func (a *api) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, *apierror.Error) {
	return a.readJSONBodyMax(w, r, a.maxBody)
}

// readJSONBodyMax is readJSONBody with a bound of its own, maxBody.
func (a *api) readJSONBodyMax(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, *apierror.Error) {
	if err := checkJSONContentType(r); err != nil {
		return nil, err
	}
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 && n <= min(maxBody, preallocMax) {
		// The length is known and net/http stops the body there: one
		// buffer of the right size, read without growing.
		body = make([]byte, n)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return nil, apierror.New(http.StatusRequestEntityTooLarge, apierror.TooLarge,
				fmt.Sprintf("request body is larger than %d bytes", maxBody))
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The rest of the body may still come; the connection cannot
			// carry another request.
			w.Header().Set("Connection", "close")
			return nil, apierror.New(http.StatusRequestTimeout, apierror.RequestTimeout,
				fmt.Sprintf("the request body did not arrive within %v", a.readTimeout))
		}
		return nil, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, "failed to read request body")
	}
	return body, nil
}

// publish serves POST /v1/publish.
func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	body, berr := a.readJSONBody(w, r)
	if berr != nil {
		apierror.Write(w, berr)
		return
	}
	drafts, batch, perr := a.parsePublish(body)
	if perr != nil {
		apierror.Write(w, perr)
		return
	}
	for _, d := range drafts {
		if !p.MayPublish(d.Topic) {
			// A batch is all or nothing: nothing is published.
			apierror.Write(w, apierror.Denied(p, fmt.Sprintf("publishing to %q", d.Topic)))
			return
		}
	}
	if ok, wait := a.publishRates.Allow(limit.Key(p.Subject, r), len(drafts)); !ok {
		apierror.WriteRateLimited(w, "publishing", wait)
		return
	}
	msgs, err := a.hub.Publish(r.Context(), drafts...)
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	out := make([]byte, 0, 32+len(msgs)*24)
	if batch {
		out = append(out, `{"ids":[`...)
		for i, m := range msgs {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, '"')
			out = m.ID.AppendText(out)
			out = append(out, '"')
		}
		out = append(out, "]}\n"...)
	} else {
		out = append(out, `{"id":"`...)
		out = msgs[0].ID.AppendText(out)
		out = append(out, "\"}\n"...)
	}
	writeJSON(w, http.StatusOK, out)
}

// parsePublish decodes and validates a publish body. It reports whether the
// body was the batch form. Every draft is normalized here, so a bad event
// is reported with its index and nothing is published.
func (a *api) parsePublish(body []byte) ([]hub.Draft, bool, *apierror.Error) {
	if !utf8.Valid(body) {
		return nil, false, badJSON("request body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, false, badJSON("request body must be a JSON object")
	}
	if d, ok := parseSingleFast(body); ok {
		return []hub.Draft{d}, false, nil
	}
	return a.decodePublish(body)
}

// decodePublish is parsePublish with encoding/json, for any body.
func (a *api) decodePublish(body []byte) ([]hub.Draft, bool, *apierror.Error) {
	var req publishJSON
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, false, badJSON(describeJSONError(err))
	}
	if req.Events == nil {
		d, err := draftOf(req.eventJSON)
		if err != nil {
			return nil, false, err
		}
		return []hub.Draft{d}, false, nil
	}
	if req.Topic != nil || req.Type != nil || req.Key != nil || req.Data != nil {
		return nil, true, apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
			`give either "topic", "type", "key" and "data", or "events", not both`)
	}
	var events []eventJSON
	if err := json.Unmarshal(req.Events, &events); err != nil {
		return nil, true, badJSON(`"events": ` + describeJSONError(err))
	}
	if len(events) == 0 {
		return nil, true, apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
			`"events" must be a non-empty array`)
	}
	if len(events) > a.maxBatch {
		return nil, true, apierror.New(http.StatusRequestEntityTooLarge, apierror.TooLarge,
			fmt.Sprintf("a batch holds at most %d events, got %d", a.maxBatch, len(events)))
	}
	drafts := make([]hub.Draft, len(events))
	for i, e := range events {
		d, err := draftOf(e)
		if err != nil {
			err.Message = "events[" + strconv.Itoa(i) + "]: " + err.Message
			return nil, true, err
		}
		drafts[i] = d
	}
	return drafts, true, nil
}

// draftOf validates one event and returns it normalized.
func draftOf(e eventJSON) (hub.Draft, *apierror.Error) {
	if e.Topic == nil {
		return hub.Draft{}, apierror.New(http.StatusBadRequest, apierror.InvalidTopic, `"topic" is required`)
	}
	d := hub.Draft{Topic: *e.Topic, Data: e.Data}
	if e.Type != nil {
		// An empty type, like a missing one, means "message".
		d.Type = *e.Type
	}
	if err := d.SetKey(e.Key); err != nil {
		return hub.Draft{}, apierror.From(err)
	}
	if err := d.Normalize(); err != nil {
		return hub.Draft{}, apierror.From(err)
	}
	return d, nil
}

// checkJSONContentType accepts application/json with any parameters
// (charset=utf-8 is common) and nothing else.
func checkJSONContentType(r *http.Request) *apierror.Error {
	ct := r.Header.Get("Content-Type")
	if ct == "application/json" {
		return nil // the common case, without parsing
	}
	if ct == "" {
		return apierror.New(http.StatusUnsupportedMediaType, apierror.UnsupportedMediaType,
			"Content-Type must be application/json")
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return apierror.New(http.StatusUnsupportedMediaType, apierror.UnsupportedMediaType,
			fmt.Sprintf("Content-Type must be application/json, got %q", ct))
	}
	return nil
}

func badJSON(msg string) *apierror.Error {
	return apierror.New(http.StatusBadRequest, apierror.InvalidJSON, msg)
}

// describeJSONError turns a decoding error into a message that names the
// offending field, without Go type names.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field != "" {
			return fmt.Sprintf("field %q must not be a JSON %s", typeErr.Field, typeErr.Value)
		}
		return fmt.Sprintf("unexpected JSON %s", typeErr.Value)
	}
	return "malformed JSON: " + err.Error()
}

// writeJSON sends a JSON body that is already encoded.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	apierror.SetJSONHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
