package action

import (
	"crypto/sha256"
	"encoding/json"
	"time"
)

// record is the service's state of one action. Every field after handler is
// guarded by Service.mu; the fields above it never change after Submit.
type record struct {
	id      string
	typ     string
	topic   string
	key     string // the caller's idempotency key, or ""
	caller  string
	sum     [sha256.Size]byte // bodySum, when key is set
	handler Handler

	payload  json.RawMessage // dropped once final
	status   Status
	result   json.RawMessage
	failure  *Failure
	created  time.Time
	finished time.Time
	attempts int
}

func (s Status) final() bool { return s == Succeeded || s == Failed }

// snapshot copies the record for a caller. Service.mu is held.
func (r *record) snapshot() Action {
	a := Action{
		ID:        r.id,
		Type:      r.typ,
		Topic:     r.topic,
		Status:    r.status,
		Result:    r.result,
		CreatedAt: r.created,
		Attempts:  r.attempts,
	}
	if r.failure != nil {
		f := *r.failure
		a.Error = &f
	}
	if r.status.final() {
		t := r.finished
		a.FinishedAt = &t
	}
	return a
}

// finalizeLocked makes r final with result (failure == nil) or failure, and
// reports whether this call did it: a record becomes final exactly once, and
// only the caller that made it final publishes its result. Service.mu is held.
func (s *Service) finalizeLocked(r *record, result json.RawMessage, failure *Failure) bool {
	if r.status.final() {
		return false
	}
	if r.status == Running {
		s.running.Add(-1)
	}
	if failure != nil {
		r.status = Failed
		r.failure = failure
		s.failed.Add(1)
	} else {
		r.status = Succeeded
		r.result = result
		s.succeeded.Add(1)
	}
	r.finished = time.Now()
	if s.observe != nil {
		s.observe(r.status, r.finished.Sub(r.created))
	}
	r.payload = nil
	s.expiry.push(r)
	for s.expiry.len() > s.maxFinished || s.expiry.bytes > s.maxBytes {
		// Over a bound: the oldest finished record goes early.
		s.forgetLocked(s.expiry.front())
		s.expiry.pop()
	}
	return true
}

// expiredLocked reports whether r is final and past its TTL, which makes it
// gone for Get and for its idempotency key even before the janitor sweeps it.
func (s *Service) expiredLocked(r *record, now time.Time) bool {
	return r.status.final() && now.Sub(r.finished) >= s.ttl
}

// forgetLocked removes r and its idempotency key. Service.mu is held.
func (s *Service) forgetLocked(r *record) {
	if s.records[r.id] == r {
		delete(s.records, r.id)
	}
	if r.key != "" {
		k := idemKey{caller: r.caller, key: r.key}
		if s.keys[k] == r {
			delete(s.keys, k)
		}
	}
}

// recordOverhead is what a finished record costs besides its variable
// fields: the struct, its entries in the records and keys maps and its slot
// in the expiry queue, rounded up.
const recordOverhead = 512

// size is what a finished record counts against Options.MaxFinishedBytes.
// The payload is not counted: it is dropped when the record becomes final.
func (r *record) size() int {
	n := recordOverhead + len(r.id) + len(r.typ) + len(r.topic) + len(r.key) + len(r.caller) + len(r.result)
	if r.failure != nil {
		n += len(r.failure.Code) + len(r.failure.Message)
	}
	return n
}

// fifo is a queue of finished records in the order they finished, which is
// also the order they expire in (one TTL for all), and the sum of their
// sizes. A record's size does not change once it is final.
type fifo struct {
	items []*record
	head  int
	bytes int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(r *record) {
	q.items = append(q.items, r)
	q.bytes += r.size()
}

func (q *fifo) front() *record { return q.items[q.head] }

func (q *fifo) pop() {
	q.bytes -= q.items[q.head].size()
	q.items[q.head] = nil
	q.head++
	// Reclaim the consumed front once it is at least half of the slice.
	if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
}
