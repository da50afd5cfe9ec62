package action

import (
	"context"
	"encoding/json"
	"time"
)

// Runner is what the transports need of the action service: *Service
// implements it, and the transports depend on nothing else of it.
type Runner interface {
	// Submit queues an action; created is false for an idempotent repeat.
	Submit(ctx context.Context, req Request) (a Action, created bool, err error)
	// Get returns an action by ID while its record is kept.
	Get(ctx context.Context, id string) (Action, bool, error)
	// Handle registers a handler (see Service.Handle).
	Handle(typ string, h Handler)
	// Stats returns this node's counters.
	Stats() Stats
	// Shutdown stops taking actions and lets running ones finish.
	Shutdown(ctx context.Context) error
}

// Stored is an action as a Store keeps it: the status document plus what
// a worker on any node needs to run it.
type Stored struct {
	Action
	Payload json.RawMessage `json:"payload,omitempty"` // dropped once final
	Key     string          `json:"key,omitempty"`     // the caller's idempotency key
	Caller  string          `json:"caller,omitempty"`
	Sum     string          `json:"sum,omitempty"` // the body's hash (hex), when Key is set
	// Published is set once the result event is published (Store.Done).
	Published bool `json:"-"`
	// Version is the Store's own revision of the record as this copy
	// last read or wrote it (0: not known), for stores that change
	// records by compare-and-set.
	Version uint64 `json:"-"`
}

// Claim is an action leased to one worker: no other node runs it while
// the lease lasts, and it goes to another node if the lease runs out.
type Claim struct {
	Stored
	// Token names the queue entry for Touch, Done and Release.
	Token string
	// Redelivered is set when another worker had it before (it died, or
	// gave it back).
	Redelivered bool
}

// Store keeps the actions of one process (action/memstore) or of several
// nodes (action/redisstore, action/natsstore): a queue that hands each
// action to one worker at a time, the actions' records, and their
// idempotency keys. Implementations are safe for concurrent use and pass
// the suite in action/storetest.
type Store interface {
	// Create records a new pending action and queues it, in one step with
	// its idempotency key (Key, Caller): when the key already names a kept
	// action, nothing is created and that action is returned. It returns
	// ErrQueueFull when maxQueued actions are in the queue already: an
	// action counts from Create until Done, waiting or claimed.
	Create(ctx context.Context, a *Stored, maxQueued int) (existing *Stored, err error)
	// Claim leases the next queued action, or one whose lease ran out, to
	// this store's worker for lease. It waits up to wait (or ctx) and
	// returns nil, nil when there is none.
	Claim(ctx context.Context, lease, wait time.Duration) (*Claim, error)
	// Touch renews a lease.
	Touch(ctx context.Context, c *Claim) error
	// Save records a status change of an action that is not final.
	Save(ctx context.Context, a *Stored) error
	// Finish records a's final status, kept for ttl with its key, unless
	// the action is final already; it reports whether this call made it
	// final.
	Finish(ctx context.Context, a *Stored, ttl time.Duration) (bool, error)
	// Done marks the result as published and removes the claim's queue
	// entry.
	Done(ctx context.Context, c *Claim) error
	// Release gives a claimed action back to the queue at once, for
	// another node (a worker that stops before finishing it).
	Release(ctx context.Context, c *Claim) error
	// Get returns a kept action.
	Get(ctx context.Context, id string) (*Stored, bool, error)
	// Local reports whether the store's actions live in this process
	// alone (its memory), out of reach of any other process. It decides
	// what Service.Shutdown does with the actions it leaves unfinished:
	// a local store's would never run, so they are failed; a shared
	// store's are left for another node.
	Local() bool
}

// QueueLen is implemented by a Store that knows, without a round trip, how
// many of its actions wait for a worker (action/memstore). Stats.Queued
// reports it; on other stores Queued is 0.
type QueueLen interface {
	// Waiting returns how many actions are queued and not claimed.
	Waiting() int
}
