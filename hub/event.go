package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// DefaultType is the type of an event published without one.
const DefaultType = "message"

// ReservedTypePrefix starts the types only the server may use (herald.reset, …),
// in any case: clients match types as they like, and one that folds case
// must not take HERALD.reset for the server's own.
const ReservedTypePrefix = "herald."

// ReservedType reports whether t is in the server's reserved namespace: it
// begins with ReservedTypePrefix, compared without regard to case.
func ReservedType(t string) bool {
	return len(t) >= len(ReservedTypePrefix) && strings.EqualFold(t[:len(ReservedTypePrefix)], ReservedTypePrefix)
}

// ErrInvalidType is returned for a type outside [A-Za-z0-9_.:-]{1,64} or one
// in the reserved herald.* namespace.
var ErrInvalidType = errors.New("invalid type")

// ErrInvalidData is returned when an event's data is not one JSON value.
var ErrInvalidData = errors.New("invalid data")

// Event is one published event as clients see it.
type Event struct {
	ID    Cursor
	Topic string
	Type  string
	Data  json.RawMessage // compact JSON; "null" when the publisher gave none
	Time  time.Time
}

// Draft is an event before the broker has given it a cursor and a time.
type Draft struct {
	Topic string
	Type  string
	Data  json.RawMessage

	// compacted is Data as Normalize left it. The HTTP API normalizes a
	// draft to report a bad event by its index, and Hub.Publish normalizes
	// again; the second pass skips the compaction, the costly part, while
	// Data is still the same slice.
	compacted json.RawMessage
}

// Normalize validates d in place: the topic, the type (defaulting to
// "message"), and the data, which it compacts to one line so that it can be
// framed as a single SSE data line. Errors match ErrInvalidTopic,
// ErrInvalidType or ErrInvalidData.
func (d *Draft) Normalize() error {
	if err := ValidateTopic(d.Topic); err != nil {
		return err
	}
	if d.Type == "" {
		d.Type = DefaultType
	}
	if err := ValidateType(d.Type); err != nil {
		return err
	}
	if len(d.Data) > 0 && len(d.Data) == len(d.compacted) && unsafe.SliceData(d.Data) == unsafe.SliceData(d.compacted) {
		return nil
	}
	if len(bytes.Trim(d.Data, " \t\r\n")) == 0 {
		// Only JSON's own whitespace: a vertical tab is not blank data.
		d.Data = json.RawMessage("null")
		return nil
	}
	// json.Compact checks syntax only; JSON text is UTF-8, and a WebSocket
	// text frame that is not makes the receiver fail the connection.
	if !utf8.Valid(d.Data) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidData)
	}
	var buf bytes.Buffer
	buf.Grow(len(d.Data))
	if err := json.Compact(&buf, d.Data); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidData, err)
	}
	d.Data = buf.Bytes()
	d.compacted = d.Data
	return nil
}

// ValidateType checks a publisher-supplied event type.
func ValidateType(t string) error {
	if len(t) == 0 || len(t) > 64 {
		return fmt.Errorf("%w %q: must be 1 to 64 bytes", ErrInvalidType, t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !segmentByte(c) && c != '.' && c != ':' {
			return fmt.Errorf("%w %q: byte %q not allowed (types are [A-Za-z0-9_.:-])", ErrInvalidType, t, c)
		}
	}
	if ReservedType(t) {
		return fmt.Errorf("%w %q: the %s namespace is reserved for the server", ErrInvalidType, t, ReservedTypePrefix)
	}
	return nil
}

// AppendJSON appends the event's envelope,
// {"id":…,"topic":…,"type":…,"data":…,"time":…}, as one line of JSON.
// Topic and type are restricted to characters that need no escaping and
// Data is already compact JSON, so no reflection is needed.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":"`...)
	b = e.ID.AppendText(b)
	b = append(b, `","topic":"`...)
	b = append(b, e.Topic...)
	b = append(b, `","type":"`...)
	b = append(b, e.Type...)
	b = append(b, `","data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// MarshalJSON encodes the envelope.
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 128+len(e.Data))), nil
}

// UnmarshalJSON decodes an envelope, so clients and tests can use Event too.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w struct {
		ID    string          `json:"id"`
		Topic string          `json:"topic"`
		Type  string          `json:"type"`
		Data  json.RawMessage `json:"data"`
		Time  time.Time       `json:"time"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	id, err := ParseCursor(w.ID)
	if err != nil {
		return fmt.Errorf("failed to parse event id %q: %w", w.ID, err)
	}
	*e = Event{ID: id, Topic: w.Topic, Type: w.Type, Data: w.Data, Time: w.Time}
	return nil
}

// maxFormats bounds the number of wire formats a process may register.
const maxFormats = 8

// Format is a wire encoding of events, registered once per transport.
// Each Message encodes itself at most once per Format, and every subscriber
// of that transport shares the resulting bytes.
type Format struct {
	id     int
	encode func(dst []byte, m *Message) []byte
}

var formats struct {
	sync.Mutex
	n int
}

// NewFormat registers a wire format. encode appends the frame for m to dst;
// it must not retain dst or modify m. Call it from package initialisation.
func NewFormat(encode func(dst []byte, m *Message) []byte) *Format {
	formats.Lock()
	defer formats.Unlock()
	if formats.n == maxFormats {
		panic("hub: too many wire formats")
	}
	f := &Format{id: formats.n, encode: encode}
	formats.n++
	return f
}

// Message is an event on its way through the hub: the event, its envelope
// encoded once, and a cache of its frames per wire format. A Message is
// immutable once created and is shared by every subscriber queue it is in.
type Message struct {
	Event
	seq    uint64
	env    []byte
	frames [maxFormats]atomic.Pointer[[]byte]
}

// NewMessage wraps an event, encoding its envelope once.
func NewMessage(e Event) *Message {
	return &Message{Event: e, seq: e.ID.Seq, env: e.AppendJSON(make([]byte, 0, 128+len(e.Data)))}
}

// Envelope returns the event's JSON envelope. The bytes are shared: do not modify them.
func (m *Message) Envelope() []byte { return m.env }

// Frame returns the message encoded in format f, encoding it on first use.
// Safe for concurrent use; the bytes are shared: do not modify them.
func (m *Message) Frame(f *Format) []byte {
	if p := m.frames[f.id].Load(); p != nil {
		return *p
	}
	b := f.encode(make([]byte, 0, len(m.env)+64), m)
	// Two writers racing here encode identical bytes; either may win.
	if m.frames[f.id].CompareAndSwap(nil, &b) {
		return b
	}
	return *m.frames[f.id].Load()
}

// size is what the message counts against a subscriber's queue bound.
func (m *Message) size() int { return len(m.env) + 64 }
