package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
)

// inbound is any client message; which fields matter depends on Op.
type inbound struct {
	Op             string          `json:"op"`
	Ref            json.RawMessage `json:"ref"` // echoed verbatim in the reply: the message was UTF-8 (readLoop)
	Topics         []string        `json:"topics"`
	Since          string          `json:"since"`
	Rewind         json.RawMessage `json:"rewind"` // checked by hub.ParseRewind: a number's text, not any JSON number
	State          json.RawMessage `json:"state"`  // true, false or null; checked by parseState
	Topic          string          `json:"topic"`
	Type           string          `json:"type"`
	Key            *string         `json:"key"`
	Data           json.RawMessage `json:"data"`
	Payload        json.RawMessage `json:"payload"`
	IdempotencyKey string          `json:"idempotency_key"`
	Token          string          `json:"token"` // refresh
	// Presence and PresenceEvents are pointers so that a JSON null counts as
	// absent, as it does for every other optional field.
	Presence       *bool           `json:"presence"`
	Info           json.RawMessage `json:"info"` // checked by the hub (hub.ValidateInfo)
	PresenceEvents *bool           `json:"presence_events"`
	Delta          string          `json:"delta"`    // checked by hub.ParseDelta
	Conflate       string          `json:"conflate"` // checked by hub.ParseConflate
}

func (s *session) handle(b []byte) {
	var m inbound
	if err := json.Unmarshal(b, &m); err != nil {
		var syn *json.SyntaxError
		msg := "a message must be one JSON object"
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			msg = fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ) && typ.Field != "":
			msg = fmt.Sprintf("field %q must be %s", typ.Field, jsonKind(typ.Field))
		}
		s.replyError(m.Ref, apierror.New(http.StatusBadRequest, apierror.InvalidJSON, msg))
		return
	}
	switch m.Op {
	case "subscribe":
		pats, perr := parsePatterns(m.Topics)
		if perr != nil {
			s.replyError(m.Ref, perr)
			return
		}
		if max := s.h.opts.MaxTopics; len(pats) > max || len(s.client.Patterns())+len(pats) > max {
			s.replyError(m.Ref, apierror.New(http.StatusRequestEntityTooLarge, apierror.TooLarge,
				fmt.Sprintf("a connection holds at most %d patterns; unsubscribe some first", max)))
			return
		}
		for _, pat := range pats {
			if !s.principal.Load().MaySubscribe(pat) {
				s.replyError(m.Ref, apierror.Denied(s.principal.Load(), fmt.Sprintf("subscribing to %q", pat)))
				return
			}
		}
		rewind := 0
		if len(m.Rewind) > 0 && string(m.Rewind) != "null" {
			var err error
			if rewind, err = hub.ParseRewind(string(m.Rewind)); err != nil {
				s.replyError(m.Ref, apierror.From(err))
				return
			}
		}
		state, serr := parseState(m.State)
		if serr != nil {
			s.replyError(m.Ref, serr)
			return
		}
		delta, err := hub.ParseDelta(m.Delta)
		if err != nil {
			s.replyError(m.Ref, apierror.From(err))
			return
		}
		var conflate time.Duration
		if m.Conflate != "" {
			if conflate, err = hub.ParseConflate(m.Conflate); err != nil {
				s.replyError(m.Ref, apierror.From(err))
				return
			}
		}
		req := hub.SubscribeRequest{Patterns: pats, Since: m.Since, Rewind: rewind, Ack: subscribeOK(m.Ref, s.client.ConnID()),
			Presence: m.Presence != nil && *m.Presence, PresenceEvents: m.PresenceEvents != nil && *m.PresenceEvents,
			Delta: delta, Conflate: conflate}
		ref, conn := m.Ref, s.client.ConnID()
		req.Start = func(c hub.Cursor) []byte { return subscribeStartOK(ref, conn, c) }
		if state {
			req.State = true
			req.Synced = func(sy hub.Synced) []byte { return syncedFrame(ref, sy) }
		}
		if req.Presence {
			// The message's info, else the token's herald.info claim.
			var claimInfo json.RawMessage
			req.User, claimInfo = s.principal.Load().Member()
			req.Info = m.Info
			if len(m.Info) == 0 || string(m.Info) == "null" {
				req.Info = claimInfo
			}
		}
		// The ok goes in with the subscription so it precedes replayed events.
		// Another error means the client is closing; there is nobody to tell.
		if err := s.client.Subscribe(req); errors.Is(err, hub.ErrInvalidPresence) || errors.Is(err, hub.ErrStateUnsupported) || errors.Is(err, hub.ErrUnavailable) {
			s.replyError(m.Ref, apierror.From(err))
		}
	case "unsubscribe":
		pats, perr := parsePatterns(m.Topics)
		if perr != nil {
			s.replyError(m.Ref, perr)
			return
		}
		s.client.Unsubscribe(pats)
		s.client.Queue(okReply("ok", m.Ref, ""))
	case "publish":
		if !s.principal.Load().MayPublish(m.Topic) && hub.ValidateTopic(m.Topic) == nil {
			s.replyError(m.Ref, apierror.Denied(s.principal.Load(), fmt.Sprintf("publishing to %q", m.Topic)))
			return
		}
		if ok, wait := s.h.opts.PublishRates.Allow(s.rateKey, 1); !ok {
			s.replyError(m.Ref, rateLimited("publishing", wait))
			return
		}
		d := hub.Draft{Topic: m.Topic, Type: m.Type, Data: m.Data}
		if err := d.SetKey(m.Key); err != nil {
			s.replyError(m.Ref, apierror.From(err))
			return
		}
		msgs, err := s.h.opts.Hub.Publish(s.ctx, d)
		if err != nil {
			s.replyError(m.Ref, apierror.From(err))
			return
		}
		s.client.Queue(okReply("ok", m.Ref, msgs[0].ID.String()))
	case "action":
		s.submitAction(m)
	case "ping":
		s.client.Queue(okReply("pong", m.Ref, ""))
	case "stats":
		s.client.Queue(statsReply(m.Ref, &s.stats))
	case "refresh":
		s.refresh(m)
	case "":
		s.replyError(m.Ref, apierror.New(http.StatusBadRequest, apierror.UnknownOp, `the message has no "op"`))
	default:
		op := m.Op
		if len(op) > 32 {
			op = op[:32] + "…"
		}
		s.replyError(m.Ref, apierror.New(http.StatusBadRequest, apierror.UnknownOp,
			fmt.Sprintf("unknown op %q (ops: subscribe, unsubscribe, publish, action, ping, refresh, stats)", op)))
	}
}

// submitAction handles the "action" op. The reply carries only the action's
// ID, for a new action and for an idempotent repeat alike: the result
// arrives as an event on the action's topic (subscribe to it first) and the
// status can be read over HTTP.
func (s *session) submitAction(m inbound) {
	svc := s.h.opts.Actions
	if svc == nil {
		s.replyError(m.Ref, apierror.New(http.StatusUnprocessableEntity, apierror.UnknownAction,
			"actions are not enabled on this server"))
		return
	}
	req := action.Request{
		Type: m.Type, Topic: m.Topic, Payload: m.Payload, IdempotencyKey: m.IdempotencyKey,
		Caller: s.principal.Load().Subject,
	}
	if err := req.Validate(); err != nil {
		s.replyError(m.Ref, apierror.From(err))
		return
	}
	if e := checkIdempotencyKey(m.IdempotencyKey); e != nil {
		s.replyError(m.Ref, e)
		return
	}
	if !s.principal.Load().MayAct(m.Type) {
		s.replyError(m.Ref, apierror.Denied(s.principal.Load(), fmt.Sprintf("actions of type %q", m.Type)))
		return
	}
	if ok, wait := s.h.opts.ActionRates.Allow(s.rateKey, 1); !ok {
		s.replyError(m.Ref, rateLimited("actions", wait))
		return
	}
	a, _, err := svc.Submit(s.ctx, req)
	if err != nil {
		s.replyError(m.Ref, apierror.From(err))
		return
	}
	id, err := json.Marshal(a.ID)
	if err != nil {
		s.replyError(m.Ref, apierror.From(err))
		return
	}
	b := make([]byte, 0, 48+len(m.Ref)+len(id))
	b = append(b, `{"op":"ok"`...)
	if hasRef(m.Ref) {
		b = append(b, `,"ref":`...)
		b = append(b, m.Ref...)
	}
	b = append(b, `,"action_id":`...)
	b = append(b, id...)
	s.client.Queue(append(b, '}'))
}

// refresh handles the "refresh" op: a new token for the same subject
// replaces the connection's grants and moves its expiry. It must still
// grant every subscription the connection holds; otherwise, or if the token
// does not verify, the connection keeps its old token (and its old expiry).
func (s *session) refresh(m inbound) {
	a := s.h.opts.Auth
	if a == nil {
		s.client.Queue(okReply("ok", m.Ref, "")) // nothing expires
		return
	}
	p, err := a.Token(m.Token)
	if err != nil {
		s.replyError(m.Ref, apierror.From(err))
		return
	}
	if p.Subject != s.principal.Load().Subject {
		s.replyError(m.Ref, apierror.New(http.StatusForbidden, apierror.Forbidden,
			"a refresh must be for the same subject ("+strconv.Quote(s.principal.Load().Subject)+")"))
		return
	}
	for _, raw := range s.client.Patterns() {
		if pat, err := hub.ParsePattern(raw); err != nil || !p.MaySubscribe(pat) {
			s.replyError(m.Ref, apierror.New(http.StatusForbidden, apierror.Forbidden,
				fmt.Sprintf("the new token does not grant subscribing to %q, which this connection has; unsubscribe first", raw)))
			return
		}
	}
	s.principal.Store(p)
	s.expiry.Extend(p)
	s.client.Queue(okReply("ok", m.Ref, ""))
}

// rateLimited is the error reply of an op over its rate.
func rateLimited(what string, wait time.Duration) *apierror.Error {
	return apierror.New(http.StatusTooManyRequests, apierror.RateLimited,
		fmt.Sprintf("too many requests for %s; retry after %d s", what, limit.RetryAfter(wait)))
}

// checkIdempotencyKey accepts "" (no key) or a key action.ValidateKey
// accepts: HTTP and WebSocket share keys, so they share the rule.
func checkIdempotencyKey(k string) *apierror.Error {
	if k == "" {
		return nil
	}
	if err := action.ValidateKey(k); err != nil {
		return apierror.InvalidKey(`"idempotency_key"`, err)
	}
	return nil
}

func jsonKind(field string) string {
	switch field {
	case "topics":
		return "an array of strings"
	case "data", "payload", "ref", "info":
		return "JSON"
	case "presence", "presence_events":
		return "true or false"
	default:
		return "a string"
	}
}

// parsePatterns validates the topics of a subscribe or unsubscribe.
func parsePatterns(topics []string) ([]hub.Pattern, *apierror.Error) {
	if len(topics) == 0 {
		return nil, apierror.New(http.StatusBadRequest, apierror.InvalidPattern, `"topics" must list at least one pattern`)
	}
	pats := make([]hub.Pattern, len(topics))
	for i, t := range topics {
		p, err := hub.ParsePattern(t)
		if err != nil {
			return nil, apierror.From(err)
		}
		pats[i] = p
	}
	return pats, nil
}

// parseState reads a subscribe's "state": true, false, or absent or null
// (false).
func parseState(raw json.RawMessage) (bool, *apierror.Error) {
	switch string(raw) {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, `"state" must be true or false`)
}
