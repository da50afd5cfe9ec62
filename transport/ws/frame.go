package ws

import (
	"bytes"
	"encoding/json"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/wsframe"
)

// eventFormat is an event's complete WebSocket frame, header included, with
// the payload {"op":"event",…envelope fields…}: a head of the frame header
// and the "op" field, then the envelope after its opening brace. Server
// frames are not masked, so the frame is the same for every subscriber: the
// hub encodes the head once per event and every WebSocket subscriber's
// writer sends it and the shared envelope, beside coder/websocket's writer
// (library.go, assumption 4). Writing each event with coder/websocket's
// Conn.Write instead, which takes the payload as one slice, costs 1.5 to 1.8
// times the server CPU per delivery (docs/benchmarks.md, "Writing beside
// coder/websocket").
var eventFormat = hub.NewFormat(func(dst []byte, m *hub.Message) []byte {
	return appendEventHead(dst, m.Envelope())
}, 1, "")

// appendEventHead appends the head of the event frame whose envelope is
// env: the frame header and the "op" field. env[1:] follows it.
func appendEventHead(dst, env []byte) []byte {
	dst = appendTextHeader(dst, len(eventOp)+len(env)-1)
	return append(dst, eventOp...)
}

// eventFrameLen is the length of m's plain event frame (eventFormat),
// header included, without encoding it.
func eventFrameLen(m *hub.Message) int {
	n := len(eventOp) + len(m.Envelope()) - 1
	switch {
	case n <= 125:
		return 2 + n
	case n <= 0xFFFF:
		return 4 + n
	default:
		return 10 + n
	}
}

// appendTextHeader appends the header of an unmasked, final text frame
// carrying n payload bytes (RFC 6455 section 5.2).
func appendTextHeader(dst []byte, n int) []byte {
	return wsframe.AppendHeader(dst, wsframe.Fin|wsframe.OpText, false, n)
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

// syncedFrame encodes a herald.synced for the subscribe whose ref is ref:
// {"op":"synced","ref":REF,"id":CURSOR,"topics":[PATTERN...]}, without ref
// when the subscribe gave none. The session queues it as a reply.
func syncedFrame(ref json.RawMessage, sy hub.Synced) []byte {
	if !hasRef(ref) {
		ref = nil
	}
	topics := sy.Topics
	if topics == nil {
		topics = []string{}
	}
	b, _ := json.Marshal(struct {
		Op     string          `json:"op"`
		Ref    json.RawMessage `json:"ref,omitempty"`
		ID     string          `json:"id"`
		Topics []string        `json:"topics"`
	}{"synced", ref, sy.Cursor.String(), topics})
	return b
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

// subscribeOK is the reply to a subscribe: {"op":"ok","ref":REF,"client":ID},
// the connection's ID (hub.Client.ConnID) in every one.
func subscribeOK(ref json.RawMessage, client string) []byte {
	b := okReply("ok", ref, "")
	b = append(b[:len(b)-1], `,"client":"`...)
	b = append(b, client...)
	return append(b, `"}`...)
}

// subscribeStartOK is the reply to a subscribe without since and without
// state (hub.SubscribeRequest.Start): subscribeOK with "id", the cursor the
// subscription starts at, which the client keeps until its first event.
func subscribeStartOK(ref json.RawMessage, client string, start hub.Cursor) []byte {
	b := subscribeOK(ref, client)
	b = append(b[:len(b)-1], `,"id":"`...)
	b = start.AppendText(b)
	return append(b, `"}`...)
}

// unsubscribedFrame is {"op":"unsubscribed","topics":[PATTERN...]}
// (hub.WriterOptions.Unsubscribed): the control API removed these
// subscriptions. It answers no request, so it has no ref.
func unsubscribedFrame(patterns []string) []byte {
	b, _ := json.Marshal(struct {
		Op     string   `json:"op"`
		Topics []string `json:"topics"`
	}{"unsubscribed", patterns})
	return b
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
