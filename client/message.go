package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// Event is one event as the server published it. Its strings and Data
// share one buffer, the event's only allocation: treat Data as read-only
// (copy it to change it); a delta subscription also keeps it as the base
// of the next delta of its key.
type Event struct {
	ID    string // its cursor: opaque, resumes after this event
	Topic string
	Type  string
	Key   string // "" for an event without a key
	// Data is the event's data, exactly the JSON text the server sent
	// ("null" when the publisher gave none). With SubscribeOptions.Delta
	// it is the full data, the delta already applied.
	Data json.RawMessage
	Time time.Time
}

// AppendJSON appends the event's envelope, one line of JSON in the
// server's layout: {"id","topic","type"[,"key"],"data","time"}. Data on
// several lines is compacted (Herald compacts data, but another server
// might not); Data on several lines that is not JSON, which only an Event
// made by hand can have, is written as null, so that the envelope stays
// one line.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"topic":`...)
	b = appendString(b, e.Topic)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	if e.Key != "" {
		b = append(b, `,"key":`...)
		b = appendString(b, e.Key)
	}
	b = append(b, `,"data":`...)
	switch {
	case len(e.Data) == 0:
		b = append(b, "null"...)
	case hasLineBreak(e.Data):
		buf := bytes.NewBuffer(b)
		if json.Compact(buf, e.Data) == nil {
			b = buf.Bytes()
		} else {
			// Only an Event made by hand: keep the one line.
			b = append(b, "null"...)
		}
	default:
		b = append(b, e.Data...)
	}
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// appendString appends s as a JSON string. Cursors, topics, types and
// keys need no escaping; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Kind tells what a Message carries.
type Kind uint8

const (
	// KindEvent is an event: Message.Event.
	KindEvent Kind = iota + 1
	// KindReset is the server's herald.reset: events between the last
	// one delivered and Cursor are lost to this subscription (Reason says
	// why: "history_gone", "epoch_changed", "unknown_cursor"). Live events
	// follow; with state, the topics' state and a KindSynced first.
	KindReset
	// KindSynced is the server's herald.synced: the state of Topics has
	// been delivered, exact at Cursor; the events after it follow.
	KindSynced
)

func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindReset:
		return "reset"
	case KindSynced:
		return "synced"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Message is what a subscription delivers: an event, a reset or a synced
// marker.
type Message struct {
	Kind  Kind
	Event Event // KindEvent
	// Cursor is the position of a reset (the head it resumes from) or a
	// synced marker (the snapshot's position).
	Cursor string
	Reason string   // KindReset
	Topics []string // KindReset, KindSynced
}

// envelope is an event as read off the wire, before its delta (if any) is
// applied.
type envelope struct {
	Event
	delta []byte // the delta's JSON string, quotes included; nil: Data is full
}

var errMalformed = errors.New("malformed event")

// parseEnvelope reads an envelope whose bytes from `"id":` on are b (the
// opening brace, and a WebSocket event's "op" field, cut off). The event's
// fields share one copy of b, the only allocation when the envelope has
// the server's layout; other layouts are read by encoding/json.
func parseEnvelope(b []byte) (envelope, error) {
	own := make([]byte, len(b))
	copy(own, b)
	return parseOwned(own)
}

// parseOwned is parseEnvelope of bytes the event may keep.
func parseOwned(b []byte) (envelope, error) {
	if e, ok := parseFast(b); ok {
		return e, nil
	}
	return parseSlow(b)
}

// parseFast reads the server's fixed layout,
// "id":"…","topic":"…","type":"…"[,"key":"…"],"data":…,"time":"…"},
// with "delta":"…" in place of "data" for a delta. The strings of the
// returned event point into b, which must not change afterwards. Data
// goes out as it came (Event.AppendJSON, herald sub's lines), so data with
// a line break must be valid JSON, whose breaks AppendJSON compacts away:
// other text could end the line and forge another.
func parseFast(b []byte) (e envelope, ok bool) {
	rest := b
	field := func(name string) (string, bool) {
		if !bytes.HasPrefix(rest, []byte(name)) {
			return "", false
		}
		rest = rest[len(name):]
		i := bytes.IndexByte(rest, '"')
		if i < 0 {
			return "", false
		}
		v := rest[:i]
		rest = rest[i+1:]
		// Escapes are parseSlow's to read; control bytes make no JSON.
		for _, c := range v {
			if c < 0x20 || c == '\\' {
				return "", false
			}
		}
		return unsafe.String(unsafe.SliceData(v), len(v)), true
	}
	if e.ID, ok = field(`"id":"`); !ok {
		return e, false
	}
	if e.Topic, ok = field(`,"topic":"`); !ok {
		return e, false
	}
	if e.Type, ok = field(`,"type":"`); !ok {
		return e, false
	}
	if bytes.HasPrefix(rest, []byte(`,"key":"`)) {
		if e.Key, ok = field(`,"key":"`); !ok {
			return e, false
		}
	}
	const timeField = `,"time":"`
	t := bytes.LastIndex(rest, []byte(timeField))
	if t < 0 || !bytes.HasSuffix(rest, []byte(`"}`)) || t+len(timeField) > len(rest)-2 {
		return e, false
	}
	ts := rest[t+len(timeField) : len(rest)-2]
	var err error
	if e.Time, err = time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(ts), len(ts))); err != nil {
		return e, false
	}
	body := rest[:t]
	switch {
	case bytes.HasPrefix(body, []byte(`,"data":`)):
		e.Data = body[len(`,"data":`):len(body):len(body)]
		// Data on one line cannot end an envelope's line and forge
		// another, and Herald compacts it: only data with a line break,
		// which no Herald server sends, pays for a full validation
		// (3 ns a byte: 11 times the parse of a 4 KB event).
		if len(e.Data) == 0 || hasLineBreak(e.Data) && !json.Valid(e.Data) {
			return e, false
		}
	case bytes.HasPrefix(body, []byte(`,"delta":"`)) && len(body) > len(`,"delta":""`)-1 && body[len(body)-1] == '"':
		e.delta = body[len(`,"delta":`):]
		if !json.Valid(e.delta) {
			return e, false
		}
	default:
		return e, false
	}
	return e, e.ID != "" && e.Topic != ""
}

// parseSlow reads an envelope of any layout with encoding/json. b lacks
// its opening brace.
func parseSlow(b []byte) (envelope, error) {
	full := make([]byte, 0, len(b)+1)
	full = append(append(full, '{'), b...)
	var w struct {
		ID    string          `json:"id"`
		Topic string          `json:"topic"`
		Type  string          `json:"type"`
		Key   string          `json:"key"`
		Data  json.RawMessage `json:"data"`
		Delta json.RawMessage `json:"delta"`
		Time  time.Time       `json:"time"`
	}
	if err := json.Unmarshal(full, &w); err != nil {
		return envelope{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if w.ID == "" || w.Topic == "" {
		return envelope{}, fmt.Errorf("%w: no id or topic", errMalformed)
	}
	e := envelope{Event: Event{ID: w.ID, Topic: w.Topic, Type: w.Type, Key: w.Key, Data: w.Data, Time: w.Time}}
	if w.Data == nil {
		if w.Delta != nil && w.Delta[0] == '"' {
			e.delta = w.Delta
		} else {
			e.Data = json.RawMessage("null")
		}
	}
	return e, nil
}

// hasLineBreak reports whether b holds a CR or LF: two IndexByte calls,
// which are vectorised, where IndexAny goes byte by byte.
func hasLineBreak(b []byte) bool {
	return bytes.IndexByte(b, '\n') >= 0 || bytes.IndexByte(b, '\r') >= 0
}
