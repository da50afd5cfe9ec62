package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
)

// Paths of the control API.
const (
	disconnectPath  = "/v1/disconnect"
	unsubscribePath = "/v1/unsubscribe"
)

// controlJSON is the body of POST /v1/disconnect and /v1/unsubscribe.
// Unknown fields are ignored, as in a publish.
type controlJSON struct {
	User   *string         `json:"user"`
	Client *string         `json:"client"`
	Topics json.RawMessage `json:"topics"`
}

// control serves the control API's operation op (hub.ControlDisconnect,
// hub.ControlUnsubscribe): for the API key and admin tokens only, and
// with authentication off for nobody, since there is no credential to
// check then (docs/protocol.md, "Control API").
func (a *api) control(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.auth == nil {
			apierror.Write(w, apierror.New(http.StatusForbidden, apierror.Forbidden,
				"the control API needs credentials: run the server with --auth jwt, and call it with the --api-key (X-API-Key) or a token with \"herald\":{\"admin\":true}"))
			return
		}
		p, ok := a.principal(w, r)
		if !ok {
			return
		}
		if !p.MayControl() {
			if p.Anonymous() {
				apierror.Write(w, apierror.Denied(p, "the control API"))
			} else {
				apierror.Write(w, apierror.New(http.StatusForbidden, apierror.Forbidden,
					`the token does not grant the control API: it needs "herald":{"admin":true}`))
			}
			return
		}
		body, berr := a.readJSONBodyMax(w, r, min(a.maxBody, hub.MaxControlBytes))
		if berr != nil {
			apierror.Write(w, berr)
			return
		}
		c, perr := parseControl(op, body)
		if perr != nil {
			apierror.Write(w, perr)
			return
		}
		n, err := a.hub.Control(r.Context(), c)
		if err != nil {
			if errors.Is(err, hub.ErrUnavailable) {
				// This node acted; the others may not have.
				apierror.Write(w, apierror.New(http.StatusServiceUnavailable, apierror.Unavailable,
					"the server cannot reach its broker, so the other nodes were not told; connections of this node acted on: "+
						strconv.Itoa(n)))
				return
			}
			apierror.WriteErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"connections":`+strconv.Itoa(n)+"}\n"))
	}
}

// parseControl decodes and validates the body of a control operation:
// 400 invalid_json for what is not a JSON object of the right field
// types, 400 invalid_request (or invalid_pattern) for a body that is not a
// valid operation.
func parseControl(op string, body []byte) (hub.Control, *apierror.Error) {
	if !utf8.Valid(body) {
		return hub.Control{}, badJSON("request body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return hub.Control{}, badJSON("request body must be a JSON object")
	}
	var req controlJSON
	if err := json.Unmarshal(body, &req); err != nil {
		return hub.Control{}, badJSON(describeJSONError(err))
	}
	c := hub.Control{Op: op}
	if req.User != nil {
		if *req.User == "" {
			return hub.Control{}, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, `"user" must not be empty`)
		}
		c.User = *req.User
	}
	if req.Client != nil {
		if *req.Client == "" {
			return hub.Control{}, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, `"client" must not be empty`)
		}
		c.Client = *req.Client
	}
	if req.Topics != nil && string(req.Topics) != "null" {
		if op == hub.ControlDisconnect {
			return hub.Control{}, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, `a disconnect takes no "topics"`)
		}
		if err := json.Unmarshal(req.Topics, &c.Topics); err != nil {
			return hub.Control{}, badJSON(`"topics": ` + describeJSONError(err))
		}
		if c.Topics == nil {
			c.Topics = []string{} // [] was given: refused as empty below
		}
	}
	if err := hub.ValidateControl(c); err != nil {
		return hub.Control{}, apierror.From(err)
	}
	return c, nil
}
