package ws

import (
	"encoding/json"
	"strconv"
	"sync/atomic"
)

// wireStats counts the event frames written on one connection: how many,
// their bytes as sent (header and payload, compressed where compressed),
// and the bytes the same frames take uncompressed. The writer records a
// batch's tally at once; the reader answers the "stats" op from it at any
// time, so the counters are atomic. A counter read while a batch is being
// recorded may be one batch behind another: the reply is a sample, not a
// transaction.
type wireStats struct {
	events atomic.Int64
	wire   atomic.Int64
	plain  atomic.Int64
}

// frameTally is one batch's count of event frames, kept by the writer in
// a local variable so that a batch costs three atomic additions, not three
// per frame.
type frameTally struct {
	events, wire, plain int64
}

// add counts one event frame: wire bytes as sent, plain bytes as it would
// have gone uncompressed. Every kind of event frame (plain, compressed, and
// any other encoding of an event) is counted here.
func (t *frameTally) add(wire, plain int) {
	t.events++
	t.wire += int64(wire)
	t.plain += int64(plain)
}

// record adds a batch's tally.
func (s *wireStats) record(t frameTally) {
	if t.events == 0 {
		return
	}
	s.events.Add(t.events)
	s.wire.Add(t.wire)
	s.plain.Add(t.plain)
}

// statsReply encodes {"op":"stats","ref":REF,"events":N,"wire_bytes":W,"bytes":U},
// without ref when the client gave none.
func statsReply(ref json.RawMessage, s *wireStats) []byte {
	b := make([]byte, 0, 96+len(ref))
	b = append(b, `{"op":"stats"`...)
	if hasRef(ref) {
		b = append(b, `,"ref":`...)
		b = append(b, ref...)
	}
	b = append(b, `,"events":`...)
	b = strconv.AppendInt(b, s.events.Load(), 10)
	b = append(b, `,"wire_bytes":`...)
	b = strconv.AppendInt(b, s.wire.Load(), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, s.plain.Load(), 10)
	return append(b, '}')
}
