package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
)

// eventFormat is an event's complete WebSocket frame, header included, with
// the payload {"op":"event",…envelope fields…}: a head of the frame header
// and the "op" field, then the envelope after its opening brace. Server
// frames are not masked, so the frame is the same for every subscriber: the
// hub encodes the head once per event and every WebSocket subscriber's
// writer sends it and the shared envelope.
var eventFormat = hub.NewFormat(func(dst []byte, m *hub.Message) []byte {
	const op = `{"op":"event",`
	dst = appendTextHeader(dst, len(op)+len(m.Envelope())-1)
	return append(dst, op...)
}, 1, "")

// appendTextHeader appends the header of an unmasked, final text frame
// carrying n payload bytes (RFC 6455 section 5.2).
func appendTextHeader(dst []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n <= 125:
		return append(dst, finText, byte(n))
	case n <= 0xFFFF:
		return append(dst, finText, 126, byte(n>>8), byte(n))
	default:
		return append(dst, finText, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// resetFrame frames a herald.reset for one client. id is the head cursor the
// client resumes from.
func resetFrame(r *hub.Reset) []byte {
	topics := r.Topics
	if topics == nil {
		topics = []string{}
	}
	b, _ := json.Marshal(struct {
		Op     string   `json:"op"`
		Reason string   `json:"reason"`
		Topics []string `json:"topics"`
		ID     string   `json:"id"`
	}{"reset", r.Reason, topics, r.Cursor.String()})
	return b
}

// inbound is any client message; which fields matter depends on Op.
type inbound struct {
	Op             string          `json:"op"`
	Ref            json.RawMessage `json:"ref"` // echoed verbatim in the reply: the message was UTF-8 (readLoop)
	Topics         []string        `json:"topics"`
	Since          string          `json:"since"`
	Topic          string          `json:"topic"`
	Type           string          `json:"type"`
	Data           json.RawMessage `json:"data"`
	Payload        json.RawMessage `json:"payload"`
	IdempotencyKey string          `json:"idempotency_key"`
	Token          string          `json:"token"` // refresh
}

// readLoop is the reader: it handles client messages until the connection
// closes, then cancels the session's context with the reason. Every reply is
// queued on the client, so replies and events reach the client in the order
// they were queued. A bad message gets an error reply and the connection
// stays open; a message over the read limit makes coder/websocket close it
// with 1009, and a text message that is not UTF-8 closes it with 1007
// (RFC 6455 section 8.1): nothing of it is handled, so no part of it is ever
// echoed (a ref goes back byte for byte).
//
// Having handled a message, it waits for the next one in a fresh goroutine
// unless bytes of it are already here (see read.go).
func (s *session) readLoop() {
	defer s.tasks.Done()
	for {
		if err := s.conn.WaitReadable(); err != nil {
			s.stop(err)
			return
		}
		// No deadline: the reader ends when the session closes the connection.
		s.conn.SetNonblocking(true)
		typ, b, err := s.ws.Read(context.Background())
		s.conn.SetNonblocking(false)
		if errors.Is(err, errWouldBlock) {
			// Only control frames came (a pong): wait again on a fresh stack.
			s.tasks.Add(1)
			go s.readLoop()
			return
		}
		if err != nil {
			s.stop(err)
			return
		}
		if s.flood != nil && !s.flood.Allow() {
			s.stop(errFlood)
			return
		}
		switch {
		case typ != websocket.MessageText:
			s.replyError(nil, apierror.New(http.StatusUnsupportedMediaType, apierror.UnsupportedMediaType,
				"binary frames are not supported: send each message as a JSON object in a text frame"))
		case !utf8.Valid(b):
			s.stop(errInvalidUTF8)
			return
		default:
			s.handle(b)
		}
		if !s.conn.Buffered() {
			s.tasks.Add(1)
			go s.readLoop()
			return
		}
	}
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
			if !s.principal.MaySubscribe(pat) {
				s.replyError(m.Ref, apierror.Denied(s.principal, fmt.Sprintf("subscribing to %q", pat)))
				return
			}
		}
		// The ok goes in with the subscription so it precedes replayed events.
		// An error means the client is closing; there is nobody to tell.
		_ = s.client.Subscribe(hub.SubscribeRequest{Patterns: pats, Since: m.Since, Ack: okReply("ok", m.Ref, "")})
	case "unsubscribe":
		pats, perr := parsePatterns(m.Topics)
		if perr != nil {
			s.replyError(m.Ref, perr)
			return
		}
		s.client.Unsubscribe(pats)
		s.client.Queue(okReply("ok", m.Ref, ""))
	case "publish":
		if !s.principal.MayPublish(m.Topic) && hub.ValidateTopic(m.Topic) == nil {
			s.replyError(m.Ref, apierror.Denied(s.principal, fmt.Sprintf("publishing to %q", m.Topic)))
			return
		}
		if ok, wait := s.h.opts.PublishRates.Allow(s.rateKey, 1); !ok {
			s.replyError(m.Ref, rateLimited("publishing", wait))
			return
		}
		msgs, err := s.h.opts.Hub.Publish(s.ctx, hub.Draft{Topic: m.Topic, Type: m.Type, Data: m.Data})
		if err != nil {
			s.replyError(m.Ref, apierror.From(err))
			return
		}
		s.client.Queue(okReply("ok", m.Ref, msgs[0].ID.String()))
	case "action":
		s.submitAction(m)
	case "ping":
		s.client.Queue(okReply("pong", m.Ref, ""))
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
			fmt.Sprintf("unknown op %q (ops: subscribe, unsubscribe, publish, action, ping, refresh)", op)))
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
	if m.Type == "" {
		s.replyError(m.Ref, apierror.New(http.StatusBadRequest, apierror.InvalidType, `"type" is required`))
		return
	}
	if m.Topic == "" {
		s.replyError(m.Ref, apierror.New(http.StatusBadRequest, apierror.InvalidTopic,
			`"topic" is required: the action's result is published there`))
		return
	}
	if e := checkIdempotencyKey(m.IdempotencyKey); e != nil {
		s.replyError(m.Ref, e)
		return
	}
	if !s.principal.MayAct(m.Type) {
		s.replyError(m.Ref, apierror.Denied(s.principal, fmt.Sprintf("actions of type %q", m.Type)))
		return
	}
	if ok, wait := s.h.opts.ActionRates.Allow(s.rateKey, 1); !ok {
		s.replyError(m.Ref, rateLimited("actions", wait))
		return
	}
	a, _, err := svc.Submit(s.ctx, action.Request{
		Type: m.Type, Topic: m.Topic, Payload: m.Payload, IdempotencyKey: m.IdempotencyKey,
		Caller: s.principal.Subject,
	})
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
	if p.Subject != s.principal.Subject {
		s.replyError(m.Ref, apierror.New(http.StatusForbidden, apierror.Forbidden,
			"a refresh must be for the same subject ("+strconv.Quote(s.principal.Subject)+")"))
		return
	}
	for _, raw := range s.client.Patterns() {
		if pat, err := hub.ParsePattern(raw); err != nil || !p.MaySubscribe(pat) {
			s.replyError(m.Ref, apierror.New(http.StatusForbidden, apierror.Forbidden,
				fmt.Sprintf("the new token does not grant subscribing to %q, which this connection has; unsubscribe first", raw)))
			return
		}
	}
	s.principal = p
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
		return apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
			`"idempotency_key" `+strings.TrimPrefix(err.Error(), action.ErrInvalidKey.Error()+": "))
	}
	return nil
}

func jsonKind(field string) string {
	switch field {
	case "topics":
		return "an array of strings"
	case "data", "payload", "ref":
		return "JSON"
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

// hasRef reports whether the client gave a ref worth echoing.
func hasRef(ref json.RawMessage) bool {
	return len(ref) > 0 && !bytes.Equal(ref, []byte("null"))
}

// okReply encodes {"op":OP,"ref":REF,"id":ID}, leaving out an absent ref or id.
// Cursors need no escaping.
func okReply(op string, ref json.RawMessage, id string) []byte {
	b := make([]byte, 0, 24+len(ref)+len(id))
	b = append(b, `{"op":"`...)
	b = append(b, op...)
	b = append(b, '"')
	if hasRef(ref) {
		b = append(b, `,"ref":`...)
		b = append(b, ref...)
	}
	if id != "" {
		b = append(b, `,"id":"`...)
		b = append(b, id...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// replyError queues {"op":"error","ref":REF,"error":{"code","message"}}.
func (s *session) replyError(ref json.RawMessage, e *apierror.Error) {
	if !hasRef(ref) {
		ref = nil
	}
	b, err := json.Marshal(struct {
		Op    string          `json:"op"`
		Ref   json.RawMessage `json:"ref,omitempty"`
		Error *apierror.Error `json:"error"`
	}{"error", ref, e})
	if err != nil {
		return // unreachable: ref was decoded from valid JSON
	}
	s.client.Queue(b)
}
