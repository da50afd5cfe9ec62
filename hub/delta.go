package hub

import (
	"bytes"
	"unsafe"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/jsonenc"
)

// Deltas (protocol v1.1, "Deltas (keyed topics)"). A subscription that asks
// for them gets a keyed event as a fossil delta from the data of the
// previous event of the same topic and key written to its connection. The
// hub marks the items such a subscription matches (Item.Delta); the
// connection's writer remembers what it wrote last for each topic and key
// (Bases) and asks the message for the delta from that base.
//
// A delta is computed once per message and base and shared: every
// connection that was written the same previous event (all of them, on a
// topic whose subscribers keep up) gets the same bytes. A message caches
// deltaVariants of them; a connection whose base is another (it joined
// later, or conflation skipped events) computes its own.

// deltaVariants is how many (base, delta) pairs a message caches. A delta
// is used only when it is at most half the data it replaces (else deflate
// does nearly as well for far less CPU), so a cached delta envelope is
// smaller than the message's own, and the cache costs at most
// deltaVariants envelopes more, which retainedSize counts.
const deltaVariants = 2

// maxDeltaData is the largest data sent as a delta. Making a fossil delta
// is linear but costly on repetitive input (about 2 MB/s at worst, against
// 150 MB/s for a dashboard object): a publisher could otherwise make one
// large keyed event cost the server a second of CPU. Larger data goes
// whole, and deflate still compresses it.
const maxDeltaData = 32 << 10

// deltaVariant is a message encoded as a delta from one base.
type deltaVariant struct {
	base uint64 // the base's cursor Seq
	env  []byte // the envelope with "delta" in place of "data"; nil: send the data whole
}

// deltaEnvelope returns m's envelope with a delta from base (the data of
// the event whose Seq is baseSeq) in place of its data, or nil if the data
// should go whole. Safe for concurrent use.
func (m *Message) deltaEnvelope(baseSeq uint64, base []byte) []byte {
	p := m.deltas.Load()
	if p != nil {
		for _, v := range *p {
			if v.base == baseSeq {
				return v.env
			}
		}
		if len(*p) >= deltaVariants {
			return m.makeDeltaEnvelope(base)
		}
	}
	v := &deltaVariant{base: baseSeq, env: m.makeDeltaEnvelope(base)}
	for {
		var next []*deltaVariant
		if p != nil {
			if len(*p) >= deltaVariants {
				return v.env
			}
			next = append(next, *p...)
		}
		next = append(next, v)
		if m.deltas.CompareAndSwap(p, &next) {
			return v.env
		}
		p = m.deltas.Load()
	}
}

// makeDeltaEnvelope encodes m's envelope with the delta from base to its
// data, or returns nil when the delta would not be at most half the data.
func (m *Message) makeDeltaEnvelope(base []byte) []byte {
	if len(m.Data) > maxDeltaData || len(base) > maxDeltaData {
		return nil
	}
	d, ok := delta.Create(base, m.Data)
	if !ok || len(d) > len(m.Data)/2 {
		return nil
	}
	start := m.dataStart()
	head := m.env[:start-len(`"data":`)]
	tail := m.env[start+len(m.Data):]
	env := make([]byte, 0, len(head)+len(`"delta":""`)+len(d)+len(d)/8+len(tail))
	env = append(env, head...)
	env = append(env, `"delta":`...)
	env = jsonenc.AppendString(env, unsafe.String(unsafe.SliceData(d), len(d)))
	env = append(env, tail...)
	if len(env) >= len(m.env) {
		return nil // escaping made it no smaller
	}
	return env
}

// dataStart is the index of the data in the envelope. The fields before it
// (cursor, topic, type, key) never contain a quote, so the first "data": is
// the field name.
func (m *Message) dataStart() int {
	return bytes.Index(m.env, []byte(`"data":`)) + len(`"data":`)
}

// Bases is what a connection's writer remembers to write deltas: for each
// topic and key, the Seq and data of the event it wrote last. It keeps at
// most maxBases keys and maxBaseBytes of data (the data is shared with the
// messages, so this bounds what one connection can keep alive); past either
// it forgets one key, whose next event then goes whole.
//
// Concurrency: the writer's own; not safe for concurrent use. The zero
// value is ready to use.
type Bases struct {
	m     map[topicKey]*base
	bytes int
}

type topicKey struct{ topic, key string }

type base struct {
	seq  uint64
	data []byte
}

// Limits of Bases.
const (
	maxBases     = 4096
	maxBaseBytes = 4 << 20
)

// Active reports whether it, a queued item, goes through Envelope: a keyed
// event that asks for a delta, or any keyed event once one has.
func (b *Bases) Active(it Item) bool {
	return it.Msg != nil && it.Msg.Key != "" && (it.Delta || b.m != nil)
}

// Envelope returns the envelope to write for it, an event item: with a
// delta in place of the data (isDelta) when it asks for one (Item.Delta)
// and the connection was written an earlier event of the same topic and key,
// else the message's own. It records the event as the next base of its key.
// Keyed events of subscriptions without deltas are recorded too once the
// connection has had a delta item: they are what the client holds.
func (b *Bases) Envelope(it Item) (env []byte, isDelta bool) {
	m := it.Msg
	if m.Key == "" || (b.m == nil && !it.Delta) {
		return m.env, false
	}
	if b.m == nil {
		b.m = make(map[topicKey]*base)
	}
	k := topicKey{m.Topic, m.Key}
	prev := b.m[k] // one lookup: the entry is updated in place
	if prev == nil {
		if len(b.m) >= maxBases {
			b.evictOne()
		}
		b.fit(len(m.Data))
		b.m[k] = &base{seq: m.seq, data: m.Data}
		b.bytes += len(m.Data)
		return m.env, false
	}
	from := *prev
	b.bytes -= len(prev.data)
	prev.seq, prev.data = m.seq, m.Data
	b.bytes += len(m.Data)
	if b.bytes > maxBaseBytes {
		b.fit(0)
	}
	if !it.Delta || from.seq >= m.seq {
		return m.env, false
	}
	if d := m.deltaEnvelope(from.seq, from.data); d != nil {
		return d, true
	}
	return m.env, false
}

// fit forgets keys until n more bytes fit in maxBaseBytes (or none is left).
func (b *Bases) fit(n int) {
	for b.bytes+n > maxBaseBytes && len(b.m) > 0 {
		b.evictOne()
	}
}

// evictOne forgets one key, whichever the map yields first.
func (b *Bases) evictOne() {
	for k, v := range b.m {
		delete(b.m, k)
		b.bytes -= len(v.data)
		return
	}
}

// Reset forgets every base: after a herald.reset the client starts again
// from full data.
func (b *Bases) Reset() {
	b.m = nil
	b.bytes = 0
}
