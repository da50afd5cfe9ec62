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

// ErrInvalidKey is returned for an event key outside [A-Za-z0-9_.:-]{1,128}.
var ErrInvalidKey = errors.New("invalid key")

// MaxKeyLen is the longest event key.
const MaxKeyLen = 128

// Event is one published event as clients see it.
type Event struct {
	ID    Cursor
	Topic string
	Type  string
	// Key names what the event is the latest value of within its topic
	// (the topic's state); "" for an event without a key.
	Key  string
	Data json.RawMessage // compact JSON; "null" when the publisher gave none
	Time time.Time
}

// Draft is an event before the broker has given it a cursor and a time.
type Draft struct {
	Topic string
	Type  string
	Key   string // "" for none
	Data  json.RawMessage
	// Dedupe, when not "", makes the event idempotent across publishes:
	// a broker that appended an event with the same Dedupe within its
	// dedupe window does not append it again (see Broker.Publish). A
	// source that may publish a record twice (a crash between publishing
	// and forgetting it) names the record here. It never reaches clients.
	Dedupe string

	// compacted is Data as Normalize left it. The HTTP API normalizes a
	// draft to report a bad event by its index, and Hub.Publish normalizes
	// again; the second pass skips the compaction, the costly part, while
	// Data is still the same slice.
	compacted json.RawMessage
}

// Normalize validates d in place: the topic, the type (defaulting to
// "message"), the key if there is one, and the data, which it compacts to
// one line so that it can be framed as a single SSE data line. Errors match
// ErrInvalidTopic, ErrInvalidType, ErrInvalidKey or ErrInvalidData.
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
	if d.Key != "" {
		if err := ValidateKey(d.Key); err != nil {
			return err
		}
	}
	if d.Dedupe != "" {
		if err := ValidateDedupe(d.Dedupe); err != nil {
			return err
		}
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
	// Valid JSON without a whitespace byte is compact already: most data
	// is (browsers' JSON.stringify, Go's json.Marshal), and checking it
	// costs no allocation. The message's envelope copies it either way.
	if bytes.IndexAny(d.Data, " \t\r\n") < 0 && json.Valid(d.Data) {
		d.compacted = d.Data
		return nil
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

// SetKey sets the key a publisher gave, nil for none. Unlike an empty type,
// which means "message", a key given as "" is refused: the publisher meant a
// key and has none, and a Draft's empty Key would silently mean "no key".
// Normalize checks the rest.
func (d *Draft) SetKey(k *string) error {
	if k == nil {
		return nil
	}
	if *k == "" {
		return ValidateKey("")
	}
	d.Key = *k
	return nil
}

// ValidateKey checks an event key.
func ValidateKey(k string) error {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return fmt.Errorf("%w %q: must be 1 to %d bytes", ErrInvalidKey, k, MaxKeyLen)
	}
	if i := badKeyByte(k); i >= 0 {
		return fmt.Errorf("%w %q: byte %q not allowed (keys are [A-Za-z0-9_.:-])", ErrInvalidKey, k, k[i])
	}
	return nil
}

// badKeyByte returns the index of the first byte of k outside
// [A-Za-z0-9_.:-], the alphabet of keys and dedupe keys, or -1.
func badKeyByte(k string) int {
	for i := 0; i < len(k); i++ {
		if c := k[i]; !segmentByte(c) && c != '.' && c != ':' {
			return i
		}
	}
	return -1
}

// MaxDedupeLen is the longest Draft.Dedupe.
const MaxDedupeLen = 256

// ErrInvalidDedupe reports a Draft.Dedupe that is empty, too long or has a
// byte outside [A-Za-z0-9_.:-]. The restriction lets every broker use it
// as it is in a key or a message header.
var ErrInvalidDedupe = errors.New("invalid dedupe key")

// ValidateDedupe checks a Draft.Dedupe.
func ValidateDedupe(k string) error {
	if len(k) == 0 || len(k) > MaxDedupeLen {
		return fmt.Errorf("%w %q: must be 1 to %d bytes", ErrInvalidDedupe, k, MaxDedupeLen)
	}
	if i := badKeyByte(k); i >= 0 {
		return fmt.Errorf("%w %q: byte %q not allowed ([A-Za-z0-9_.:-])", ErrInvalidDedupe, k, k[i])
	}
	return nil
}

// AppendJSON appends the event's envelope,
// {"id":…,"topic":…,"type":…,"key":…,"data":…,"time":…}, as one line of
// JSON; "key" is there only when the event has one, so that an event
// without a key reads as in protocol v1. Topic, type and key are restricted to characters that need no escaping and
// Data is already compact JSON, so no reflection is needed.
func (e *Event) AppendJSON(b []byte) []byte {
	b, _, _ = e.appendJSON(b)
	return b
}

// appendJSON is AppendJSON that also reports where the data lies in b.
func (e *Event) appendJSON(b []byte) (_ []byte, dataStart, dataEnd int) {
	b = append(b, `{"id":"`...)
	b = e.ID.AppendText(b)
	b = append(b, `","topic":"`...)
	b = append(b, e.Topic...)
	b = append(b, `","type":"`...)
	b = append(b, e.Type...)
	if e.Key != "" {
		b = append(b, `","key":"`...)
		b = append(b, e.Key...)
	}
	b = append(b, `","data":`...)
	dataStart = len(b)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	dataEnd = len(b)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...), dataStart, dataEnd
}

// envelopeFixed bounds what an envelope adds to its cursor, topic, type and
// data: the field names and punctuation (45 bytes) and the time (at most 30).
// A key adds keyFixed and its own length.
const (
	envelopeFixed = 80
	keyFixed      = len(`,"key":""`)
)

// MarshalJSON encodes the envelope.
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 128+len(e.Key)+len(e.Data))), nil
}

// UnmarshalJSON decodes an envelope, so clients and tests can use Event too.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w struct {
		ID    string          `json:"id"`
		Topic string          `json:"topic"`
		Type  string          `json:"type"`
		Key   string          `json:"key"`
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
	*e = Event{ID: id, Topic: w.Topic, Type: w.Type, Key: w.Key, Data: w.Data, Time: w.Time}
	return nil
}

// maxFormats bounds the number of wire formats a process may register.
const maxFormats = 8

// Format is a wire encoding of events, registered once per transport. A
// frame is a head particular to the format, the envelope (less its first
// Skip bytes) and a constant tail: the envelope is the one copy of the
// event's bytes, and only the small head is encoded per format, once per
// Message, shared by every subscriber of that transport.
//
// A whole-frame format (NewWholeFormat) encodes the entire frame instead,
// for an encoding of the envelope that cannot share its bytes (compressed):
// still once per Message, and shared.
type Format struct {
	id    int
	skip  int
	tail  string
	head  func(dst []byte, m *Message) []byte
	whole bool
}

var formats struct {
	sync.Mutex
	n int
}

// wholeLimits holds the size bound of every whole-frame format, for
// retainedSize. It is written only while formats register, at package
// initialisation, before any Message is retained.
var wholeLimits []func(envelope int) int

// NewFormat registers a wire format whose frames are head(m), then
// m.Envelope()[skip:], then tail. head appends to dst; it must not retain
// dst or modify m. Call it from package initialisation.
func NewFormat(head func(dst []byte, m *Message) []byte, skip int, tail string) *Format {
	formats.Lock()
	defer formats.Unlock()
	return newFormatLocked(head, skip, tail)
}

func newFormatLocked(head func(dst []byte, m *Message) []byte, skip int, tail string) *Format {
	if formats.n == maxFormats {
		panic("hub: too many wire formats")
	}
	f := &Format{id: formats.n, skip: skip, tail: tail, head: head}
	formats.n++
	return f
}

// NewWholeFormat registers a wire format whose frame encode(m) makes whole,
// or none: the frame of m in this format is Frame.Head alone, and an empty
// one means the message has no frame in the format (the transport sends
// another). A frame longer than limit(len(m.Envelope())) bytes is not kept
// (as if encode had made none): limit is what retainedSize counts for the
// format, so that a retained message's cached frames stay within its
// estimate. encode appends to dst; it must not retain dst or modify m. Call
// it from package initialisation.
func NewWholeFormat(encode func(dst []byte, m *Message) []byte, limit func(envelope int) int) *Format {
	formats.Lock()
	defer formats.Unlock()
	f := newFormatLocked(func(dst []byte, m *Message) []byte {
		b := encode(dst, m)
		if len(b) > limit(len(m.env)) {
			return b[:0:0]
		}
		if cap(b)-len(b) > len(b)/8 {
			// Grown by append: what is kept is sized to the frame, as
			// wholeSize counts it.
			b = bytes.Clone(b)
		}
		return b
	}, 0, "")
	f.whole = true
	wholeLimits = append(wholeLimits, limit)
	return f
}

// wholeSize is what a retained message counts for a whole frame of at most
// limit bytes: the heap the frame may take, with the allocator's rounding
// up to a size class (at most an eighth, and a little for small sizes).
func wholeSize(limit int) int {
	if limit <= 0 {
		return 0
	}
	return limit + limit/8 + 32
}

// Frame is a message encoded in one format, in three parts sent in order.
// Body is the message's envelope itself: a writer copies it into its own
// buffer, or writes it straight to the socket when it is large. The bytes
// are shared: do not modify them.
type Frame struct {
	Head []byte
	Body []byte
	Tail string
}

// Len is the frame's size in bytes.
func (f Frame) Len() int { return len(f.Head) + len(f.Body) + len(f.Tail) }

// AppendTo appends the whole frame to dst.
func (f Frame) AppendTo(dst []byte) []byte {
	dst = append(dst, f.Head...)
	dst = append(dst, f.Body...)
	return append(dst, f.Tail...)
}

// Message is an event on its way through the hub: the event, its envelope
// encoded once, and a cache of its frame heads per wire format. A Message is
// immutable once created and is shared by every subscriber queue it is in,
// and by the memory broker's history.
//
// The envelope is the only copy of the event's bytes a Message holds: Data
// is a slice of it, and frames reuse it (see Format). A retained 1 MB event
// costs 1 MB and a little, not one copy per representation.
type Message struct {
	Event // Data aliases env
	seq   uint64
	env   []byte
	heads [maxFormats]atomic.Pointer[[]byte]

	deltas atomic.Pointer[[]*deltaVariant] // delta.go
}

// NewMessage wraps an event, encoding its envelope once. The message does
// not keep e.Data: its Data is the copy inside the envelope.
func NewMessage(e Event) *Message {
	n := envelopeFixed + len(e.ID.Epoch) + 20 + len(e.Topic) + len(e.Type) + max(len(e.Data), len("null"))
	if e.Key != "" {
		n += keyFixed + len(e.Key)
	}
	env, start, end := e.appendJSON(make([]byte, 0, n))
	e.Data = env[start:end:end]
	return &Message{Event: e, seq: e.ID.Seq, env: env}
}

// Envelope returns the event's JSON envelope. The bytes are shared: do not modify them.
func (m *Message) Envelope() []byte { return m.env }

// Frame returns the message encoded in format f, encoding its head on
// first use. Safe for concurrent use.
// In a whole-frame format (NewWholeFormat) the frame is Head alone, empty
// when the message has none in that format.
func (m *Message) Frame(f *Format) Frame {
	if f.whole {
		return Frame{Head: m.head(f)}
	}
	return Frame{Head: m.head(f), Body: m.env[f.skip:], Tail: f.tail}
}

func (m *Message) head(f *Format) []byte {
	if p := m.heads[f.id].Load(); p != nil {
		return *p
	}
	b := f.head(nil, m)
	// Two writers racing here encode identical bytes; either may win.
	if m.heads[f.id].CompareAndSwap(nil, &b) {
		return b
	}
	return *m.heads[f.id].Load()
}

// size is what the message counts against a subscriber's queue bound.
func (m *Message) size() int { return len(m.env) + 64 }

// retainedOverhead is what a retained Message costs besides its envelope
// and its topic and type: the struct with its head cache, the frame heads
// of the two transports, and its slot in the history, rounded up.
const retainedOverhead = 512

// retainedSize is what the message counts against the memory broker's byte
// bound: an honest upper estimate of the heap it holds while retained,
// counting every whole frame it may come to cache at its format's limit.
func (m *Message) retainedSize() int {
	n := len(m.env) + len(m.Topic) + len(m.Type) + len(m.Key) + retainedOverhead
	if m.Key != "" {
		n += deltaVariants * len(m.env) // cached delta envelopes, each smaller than env
	}
	for _, limit := range wholeLimits {
		n += wholeSize(limit(len(m.env)))
	}
	return n
}
