package bench

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
)

// Deltas (Config.Delta): a subscriber asks for fossil deltas, keeps per
// connection the data text of the last event of each key, rebuilds the
// data of every delta from it, and checks what it got, delta or whole,
// against what was published. The publisher writes down a hash of each
// event's data text as it builds the request (publishLog); a subscriber
// compares the hash of the text it holds, so the check costs a hash, not a
// copy of every event.
//
// Rebuilding is the costly part: delta.Apply of a 3 KB dashboard event
// takes 14 µs or more and 12 KB of garbage on this box, more than a core at
// 100,000 deliveries a second on the two the server being measured uses.
// But every subscriber of a topic holds the same texts and receives the
// same deltas. So texts are shared, immutable values (dataText), interned by
// content, and a delta applied to a text is remembered (textCache): a
// subscriber that receives the same delta for the same base gets the text
// that applying it gives, found by the delta's bytes compared in full and
// the base's identity. The client then costs about what the whole data
// would (BenchmarkDeltaEvent), and a connection holds a pointer per key,
// not a copy of each text.

// dataText is a data text and its hash (dataHash). Immutable: shared by the
// connections whose base it is.
type dataText struct {
	b    []byte
	hash uint64
}

// applied is a delta applied to a base: base and d give out.
type applied struct {
	key  uint64
	base *dataText
	d    []byte
	out  *dataText
}

// textCache holds the texts and applied deltas of a run, direct-mapped by
// hash: an entry that collides replaces the one in its slot, which costs a
// later lookup the work again, never a wrong answer. Safe for concurrent
// use.
type textCache struct {
	seed   maphash.Seed
	texts  [4096]atomic.Pointer[dataText]
	deltas [4096]atomic.Pointer[applied]
}

func newTextCache(seed maphash.Seed) *textCache { return &textCache{seed: seed} }

// intern returns the text with b's content. If own, b is not used by the
// caller after the call, and may become the text.
func (tc *textCache) intern(b []byte, own bool) *dataText {
	h := dataHash(tc.seed, b)
	slot := &tc.texts[h%uint64(len(tc.texts))]
	if t := slot.Load(); t != nil && t.hash == h && bytes.Equal(t.b, b) {
		return t
	}
	if !own {
		b = bytes.Clone(b)
	}
	t := &dataText{b: b, hash: h}
	slot.Store(t)
	return t
}

// apply returns the text delta d turns base into.
func (tc *textCache) apply(base *dataText, d []byte) (*dataText, error) {
	k := maphash.Bytes(tc.seed, d) ^ base.hash
	slot := &tc.deltas[k%uint64(len(tc.deltas))]
	if a := slot.Load(); a != nil && a.key == k && a.base == base && bytes.Equal(a.d, d) {
		return a.out, nil
	}
	out, err := delta.Apply(base.b, d)
	if err != nil {
		return nil, err
	}
	t := tc.intern(out, true)
	slot.Store(&applied{key: k, base: base, d: bytes.Clone(d), out: t})
	return t, nil
}

// hashChunk holds the data hashes of 4096 consecutive sequence numbers.
type hashChunk [4096]atomic.Uint64

// publishLog is the data hashes of one topic's events by sequence number.
// One publisher writes it, any number of subscribers read it, without a
// lock on the read path. It grows by 32 KiB per 4096 events published.
type publishLog struct {
	mu     sync.Mutex                   // serialises growth
	chunks atomic.Pointer[[]*hashChunk] // copied on growth
}

// set records h (never 0: 0 means "not published") for sequence seq.
func (l *publishLog) set(seq int64, h uint64) {
	i := int(seq >> 12)
	cs := l.chunks.Load()
	if cs == nil || i >= len(*cs) {
		l.mu.Lock()
		cs = l.chunks.Load()
		n := 0
		if cs != nil {
			n = len(*cs)
		}
		if i >= n {
			grown := make([]*hashChunk, i+1)
			if cs != nil {
				copy(grown, *cs)
			}
			for j := n; j <= i; j++ {
				grown[j] = new(hashChunk)
			}
			l.chunks.Store(&grown)
			cs = &grown
		}
		l.mu.Unlock()
	}
	(*cs)[i][seq&4095].Store(h | 1)
}

// get returns the hash recorded for seq, or 0.
func (l *publishLog) get(seq int64) uint64 {
	if seq < 0 {
		return 0
	}
	cs := l.chunks.Load()
	i := int(seq >> 12)
	if cs == nil || i >= len(*cs) {
		return 0
	}
	return (*cs)[i][seq&4095].Load()
}

// dataHash is the hash of a data text that publishLog records.
func dataHash(seed maphash.Seed, data []byte) uint64 { return maphash.Bytes(seed, data) | 1 }

// deltaState is one connection's bases: the data text of the last event of
// each key delivered on it. Only the connection's reader uses it.
type deltaState struct {
	tc    *textCache
	bases map[string]*base
	raw   []byte // the delta being decoded
}

// base is a key's slot: replacing its text allocates nothing.
type base struct{ t *dataText }

func newDeltaState(tc *textCache) *deltaState {
	return &deltaState{tc: tc, bases: map[string]*base{}}
}

// reset forgets every base: after a herald.reset the server starts each key
// over with whole data.
func (d *deltaState) reset() { clear(d.bases) }

// keep makes t the base of key.
func (d *deltaState) keep(key []byte, t *dataText) {
	if b := d.bases[string(key)]; b != nil {
		b.t = t
		return
	}
	d.bases[string(key)] = &base{t: t}
}

// forget drops key's base.
func (d *deltaState) forget(key []byte) { delete(d.bases, string(key)) }

// keyedEvent is what a delta-aware reader finds in a keyed event message.
type keyedEvent struct {
	key      []byte
	data     *dataText // the data text: the message's own, or rebuilt from a delta
	isDelta  bool
	fullSize int // the message's length had it carried data instead of delta
}

var (
	keyField   = []byte(`,"key":"`)
	deltaField = []byte(`","delta":"`)
	dataField  = []byte(`"data":`)
	timeField  = []byte(`,"time":"`)
)

// errDeltaNoBase is a delta for a key with no base on the connection.
var errDeltaNoBase = errors.New("delta for a key without a base on this connection")

// keyed parses the keyed event message p (a server envelope in the layout
// of hub's appendJSON, after the WebSocket op field) and, for a delta,
// rebuilds its data from the key's base. ok is false for a message without
// a key, which the caller reads as any event.
func (d *deltaState) keyed(p []byte) (ev keyedEvent, ok bool, err error) {
	i := bytes.Index(p, keyField)
	if i < 0 {
		return ev, false, nil
	}
	i += len(keyField)
	j := bytes.IndexByte(p[i:], '"')
	if j < 0 {
		return ev, false, nil
	}
	ev.key = p[i : i+j]
	rest := p[i+j:]
	if !bytes.HasPrefix(rest, deltaField) {
		// Whole data: between the first "data": and the last ,"time":".
		s, e := bytes.Index(p, dataField), bytes.LastIndex(p, timeField)
		if s < 0 || e < s+len(dataField) {
			return ev, true, fmt.Errorf("keyed event without data: %.200s", p)
		}
		ev.data = d.tc.intern(p[s+len(dataField):e], false)
		ev.fullSize = len(p)
		return ev, true, nil
	}
	ev.isDelta = true
	start := i + j + len(deltaField)
	raw, n, err := unquoteJSON(d.raw[:0], p[start:])
	d.raw = raw
	if err != nil {
		return ev, true, fmt.Errorf("failed to decode delta: %w", err)
	}
	b := d.bases[string(ev.key)]
	if b == nil {
		return ev, true, errDeltaNoBase
	}
	out, err := d.tc.apply(b.t, raw)
	if err != nil {
		return ev, true, err
	}
	ev.data = out
	// `"delta":"…"` gives way to `"data":…`.
	ev.fullSize = len(p) - (len(`"delta":"`) + n + 1) + len(dataField) + len(out.b)
	return ev, true, nil
}

// unquoteJSON decodes the JSON string whose text (after the opening quote)
// starts s, appending it to dst, and returns how many bytes of s it took,
// the closing quote not included.
func unquoteJSON(dst, s []byte) ([]byte, int, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return dst, i, nil
		case c < 0x20:
			return dst, 0, errors.New("control character in a string")
		case c != '\\':
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '"', '\\', '/':
			dst = append(dst, s[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s[i+1:])
			if !ok {
				return dst, 0, errors.New("bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					r2, ok = hex4(s[i+3:])
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, 0, fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return dst, 0, errors.New("unterminated string")
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// parseData returns bseq and bts of a data text the publisher wrote: an
// object that opens with them.
func parseData(data []byte) (seq, sent int64, ok bool) {
	const head, bts = `{"bseq":`, `,"bts":`
	if !bytes.HasPrefix(data, []byte(head)) {
		return 0, 0, false
	}
	seq, i, ok := intAt(data, len(head))
	if !ok || !bytes.HasPrefix(data[i:], []byte(bts)) {
		return 0, 0, false
	}
	sent, _, ok = intAt(data, i+len(bts))
	return seq, sent, ok
}

// parseCursor returns the sequence part of the event's id, the first
// "id" of the message.
func parseCursor(p []byte) (uint64, bool) {
	i := keyAt(p, 0, `"id":"`)
	if i < 0 {
		return 0, false
	}
	j := bytes.IndexByte(p[i:], '"')
	if j < 0 {
		return 0, false
	}
	j += i
	k := j
	for k > i && p[k-1] >= '0' && p[k-1] <= '9' {
		k--
	}
	if k == j {
		return 0, false
	}
	var cur uint64
	for ; k < j; k++ {
		cur = cur*10 + uint64(p[k]-'0')
	}
	return cur, true
}
