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

// Final reports whether s is an outcome: succeeded or failed.
func (s Status) Final() bool { return s == Succeeded || s == Failed }

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
	if r.status.Final() {
		t := r.finished
		a.FinishedAt = &t
	}
	return a
}

// finalizeLocked makes r final with result (failure == nil) or failure, and
// reports whether this call did it: a record becomes final exactly once, and
// only the caller that made it final publishes its result. Service.mu is held.
func (s *Service) finalizeLocked(r *record, result json.RawMessage, failure *Failure) bool {
	if r.status.Final() {
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
	s.expiry.Push(r, r.size())
	for s.expiry.Len() > s.maxFinished || s.expiry.Bytes() > s.maxBytes {
		// Over a bound: the oldest finished record goes early.
		s.forgetLocked(s.expiry.Front())
		s.expiry.Pop()
	}
	return true
}

// expiredLocked reports whether r is final and past its TTL, which makes it
// gone for Get and for its idempotency key even before the janitor sweeps it.
func (s *Service) expiredLocked(r *record, now time.Time) bool {
	return r.status.Final() && now.Sub(r.finished) >= s.ttl
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
	return finishedSize(r.result, r.failure, r.id, r.typ, r.topic, r.key, r.caller)
}

// FinishedSize is what a finished action kept in memory counts against a
// bound of bytes such as Options.MaxFinishedBytes, by the rule the Service
// counts its own records with. Sum is counted too: a Stored holds it as a
// string, where the Service's record holds it in its fixed part.
func (a *Stored) FinishedSize() int {
	return finishedSize(a.Result, a.Error, a.ID, a.Type, a.Topic, a.Key, a.Caller, a.Sum)
}

// finishedSize is the one rule for the size of a finished record: its
// fixed overhead, its strings, its result and its failure.
func finishedSize(result json.RawMessage, f *Failure, fields ...string) int {
	n := recordOverhead + len(result)
	for _, s := range fields {
		n += len(s)
	}
	if f != nil {
		n += len(f.Code) + len(f.Message)
	}
	return n
}
