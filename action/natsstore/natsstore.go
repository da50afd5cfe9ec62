// Package natsstore is an action.Store on NATS JetStream (nats.go): the
// queue and the records of the actions of a cluster of Herald nodes.
//
// It keeps, under the name <Stream>_ACTIONS (default HERALD_ACTIONS):
//
//	a work-queue stream   one message per queued action, on subject
//	                      <Stream>_ACTIONS.<id>, holding the whole action;
//	                      the durable pull consumer "workers" hands each to
//	                      one worker at a time, and the message leaves the
//	                      stream when it is acknowledged (Done)
//	a key-value bucket    r.<id>: the record ({"a": action, "p": published});
//	                      k.<hash>: an idempotency key (hash of caller and
//	                      key), holding the action ID
//
// The lease is the consumer's AckWait: a worker renews it with an
// in-progress acknowledgement (Touch), gives an action back with a
// negative one (Release), and JetStream hands an action whose lease ran out
// to any node's worker. The workers of a node waiting at once share one
// pull request (action/internal/claimbatch). Records change by
// compare-and-set on their revision, so an action becomes final once.
//
// NATS has no transaction over several subjects: Create writes the key,
// then the record, then the queue message. A node that dies between them
// leaves a key without a record, or a pending record whose message was
// never queued; the next request with that key repairs either once it is
// older than repairAfter (see byKey).
//
// Records and keys are kept for Options.TTL after their last change: it is
// the bucket's max age, as NATS 2.9 has no per-key expiry. An action that
// waits in the queue longer than that still runs (its message holds it all)
// but is not found by Get until a worker takes it.
//
// A Store is safe for concurrent use.
package natsstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/internal/claimbatch"
	"github.com/heraldpush/herald/internal/sharedcall"
)

// Options configures a Store.
type Options struct {
	// Conn is the connection to NATS. The Store does not close it.
	Conn *nats.Conn
	// Stream is the broker's stream name; the store's stream and bucket
	// are named after it (<Stream>_ACTIONS). Default "HERALD".
	Stream string
	// TTL is how long a record and its idempotency key are kept after
	// their last change; default action.DefaultTTL.
	TTL time.Duration
	// Replicas and Memory mean what they mean for the broker's stream.
	Replicas int
	Memory   bool
}

const (
	// consumerName is the durable consumer all nodes' workers share.
	consumerName = "workers"
	// queueMaxAge bounds how long an action waits for a worker, so that a
	// queue with no node left does not keep its actions for ever.
	queueMaxAge = 24 * time.Hour
	// casTries bounds the compare-and-set loop of a record change.
	casTries = 16
)

// Variables for the tests.
var (
	// repairAfter is how old a half-written action must be before a
	// request with its idempotency key repairs it; no Create takes that
	// long (every call is bounded well below it).
	repairAfter = 30 * time.Second
	// keyWait is how long a request waits for a concurrent request with
	// the same idempotency key to write its record.
	keyWait = 2 * time.Second
	// createTimeout bounds a shared create of the stream, the bucket or
	// the consumer (see share): no caller's context bounds it, as it
	// serves them all, and while it lasts the callers that come meanwhile
	// wait for it rather than ask JetStream again.
	createTimeout = 5 * time.Second
)

// Store is the JetStream-backed action.Store.
type Store struct {
	o    Options
	nc   *nats.Conn
	js   jetstream.JetStream
	name string // <Stream>_ACTIONS: the queue stream and the bucket

	// mu guards the fields below. It is never held across a round trip
	// to NATS: while JetStream does not answer, every request would wait
	// behind the one holding it, each for that one's whole timeout.
	mu      sync.Mutex
	gen     uint64 // counts forget calls: a create begun before one is not kept
	stream  jetstream.Stream
	kv      jetstream.KeyValue
	maxMsgs int // the queue stream's MaxMsgs: the queue bound in force
	cons    jetstream.Consumer
	lease   time.Duration // the consumer's AckWait

	// creates makes the callers that need the same thing created at the
	// same time share one round trip: during an outage they would
	// otherwise each send one, and all of them again once it ends.
	creates sharedcall.Group[any]
	claims  *claimbatch.Batcher
}

// New opens the store, creating its stream and bucket if there are none.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Conn == nil {
		return nil, errors.New("failed to open the action store: Options.Conn is nil")
	}
	if o.Stream == "" {
		o.Stream = "HERALD"
	}
	if o.TTL <= 0 {
		o.TTL = action.DefaultTTL
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("failed to open the action store: %w", err)
	}
	s := &Store{o: o, nc: o.Conn, js: js, name: o.Stream + "_ACTIONS", maxMsgs: -1}
	s.claims = claimbatch.New(s.fetch, s.Release)
	if _, _, err := s.open(ctx, 0); err != nil {
		return nil, fmt.Errorf("failed to open the action store: %w", err)
	}
	return s, nil
}

func (s *Store) storage() jetstream.StorageType {
	if s.o.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// open returns the queue stream and the bucket, creating them if this
// store has not yet (or lost them: see forget), and bringing the queue
// bound to maxQueued when it is not 0. It waits for JetStream only as
// long as ctx allows, even when it shares another caller's create.
func (s *Store) open(ctx context.Context, maxQueued int) (jetstream.Stream, jetstream.KeyValue, error) {
	s.mu.Lock()
	st, kv, want := s.stream, s.kv, s.maxMsgs
	s.mu.Unlock()
	if maxQueued != 0 {
		if maxQueued != want {
			st = nil
		}
		want = maxQueued
	}
	if st == nil {
		v, err := s.share(ctx, "stream "+strconv.Itoa(want), func(ctx context.Context, gen uint64) (any, error) {
			s.mu.Lock()
			st := s.stream
			done := st != nil && s.maxMsgs == want
			s.mu.Unlock()
			if done {
				return st, nil
			}
			// DiscardNew makes a full queue refuse the publish, which
			// is the bound: Create turns that refusal into ErrQueueFull.
			st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
				Name:        s.name,
				Description: "Herald actions waiting for or held by a worker",
				Subjects:    []string{s.name + ".*"},
				Retention:   jetstream.WorkQueuePolicy,
				Discard:     jetstream.DiscardNew,
				MaxMsgs:     int64(want),
				MaxAge:      queueMaxAge,
				Storage:     s.storage(),
				Replicas:    s.o.Replicas,
				Duplicates:  time.Minute,
			})
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			if s.gen == gen {
				s.stream, s.maxMsgs = st, want
			}
			s.mu.Unlock()
			return st, nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("failed to open the action queue: %w", err)
		}
		st = v.(jetstream.Stream)
	}
	if kv == nil {
		v, err := s.share(ctx, "bucket", func(ctx context.Context, gen uint64) (any, error) {
			s.mu.Lock()
			kv := s.kv
			s.mu.Unlock()
			if kv != nil {
				return kv, nil
			}
			kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      s.name,
				Description: "Herald action records and idempotency keys",
				History:     1,
				TTL:         s.o.TTL,
				Storage:     s.storage(),
				Replicas:    s.o.Replicas,
			})
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			if s.gen == gen {
				s.kv = kv
			}
			s.mu.Unlock()
			return kv, nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("failed to open the action records: %w", err)
		}
		kv = v.(jetstream.KeyValue)
	}
	return st, kv, nil
}

// share runs create once for all the callers that ask for key while it
// runs (sharedcall), each waiting only as long as its own context allows.
// create gets a context of its own, bounded by createTimeout, and the
// generation (see forget) as it was when it began, to keep what it made
// only if no forget came meanwhile (it may have been made before NATS lost
// it).
func (s *Store) share(ctx context.Context, key string, create func(ctx context.Context, gen uint64) (any, error)) (any, error) {
	return s.creates.Do(ctx, context.WithoutCancel(ctx), key, createTimeout, func(cctx context.Context) (any, error) {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		return create(cctx, gen)
	})
}

// forget drops what open made after a failure, so that the next call
// creates it again: a NATS server restarted without its data (memory
// storage) has lost the stream, the bucket and the consumer.
func (s *Store) forget() {
	s.mu.Lock()
	s.gen++
	s.stream, s.kv, s.cons = nil, nil, nil
	s.mu.Unlock()
}

func (s *Store) records(ctx context.Context) (jetstream.KeyValue, error) {
	_, kv, err := s.open(ctx, 0)
	return kv, err
}

func recKey(id string) string { return "r." + id }

func idemKey(caller, key string) string {
	h := sha256.Sum256([]byte(caller + "\x00" + key))
	return "k." + hex.EncodeToString(h[:16])
}

func (s *Store) subject(id string) string { return s.name + "." + id }

// record is a record's value in the bucket.
type record struct {
	A action.Stored `json:"a"`
	P bool          `json:"p,omitempty"` // the result event is published
}

func (r *record) final() bool { return r.A.Status.Final() }

// Create implements action.Store.
func (s *Store) Create(ctx context.Context, a *action.Stored, maxQueued int) (*action.Stored, error) {
	_, kv, err := s.open(ctx, maxQueued)
	if err != nil {
		return nil, err
	}
	var key string
	var keyRev uint64
	if a.Key != "" {
		key = idemKey(a.Caller, a.Key)
		for {
			keyRev, err = kv.Create(ctx, key, []byte(a.ID))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				s.forget()
				return nil, fmt.Errorf("failed to write the idempotency key: %w", err)
			}
			old, err := s.byKey(ctx, kv, key)
			if err != nil || old != nil {
				return old, err
			}
			// The key was left by a node that died mid-Create and is
			// removed now: take it.
		}
	}
	rec, err := json.Marshal(record{A: *a})
	if err != nil {
		return nil, err
	}
	rev, err := kv.Put(ctx, recKey(a.ID), rec)
	if err != nil {
		if key != "" {
			s.undo(kv, key, keyRev)
		}
		s.forget()
		return nil, fmt.Errorf("failed to write the action record: %w", err)
	}
	a.Version = rev
	if err := s.enqueue(ctx, a); err != nil {
		if errors.Is(err, action.ErrQueueFull) {
			s.undo(kv, recKey(a.ID), 0)
			if key != "" {
				s.undo(kv, key, keyRev)
			}
		}
		// Otherwise the message may have been stored all the same (only
		// the reply was lost): the record and key stay, and a repeat of
		// the request repairs a record that was never queued.
		return nil, err
	}
	return nil, nil
}

// hdrVersion carries the record's revision as it was when the action was
// queued: the first worker to claim it can change the record without
// reading it first.
const hdrVersion = "Herald-Version"

// enqueue publishes an action to the queue. The message ID makes a
// repeated publish within the stream's duplicate window a no-op.
func (s *Store) enqueue(ctx context.Context, a *action.Stored) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: s.subject(a.ID), Data: body, Header: nats.Header{}}
	if a.Version != 0 {
		m.Header.Set(hdrVersion, strconv.FormatUint(a.Version, 10))
	}
	_, err = s.js.PublishMsg(ctx, m, jetstream.WithMsgID(a.ID))
	if err != nil {
		if strings.Contains(err.Error(), "maximum messages exceeded") {
			return action.ErrQueueFull
		}
		s.forget()
		return fmt.Errorf("failed to queue the action: %w", err)
	}
	return nil
}

// undo removes what a failed Create wrote; rev, when not 0, makes sure
// only that revision is removed. A failure leaves it to the TTL.
func (s *Store) undo(kv jetstream.KeyValue, key string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	_ = kv.Delete(ctx, key, opts...)
}

// byKey returns the action an existing idempotency key names. It returns
// nil, nil when the key turns out to be gone, so the caller can take it:
// it expired meanwhile, or it was left without a record by a node that
// died (older than repairAfter), and byKey removed it. A key younger than
// that without a record belongs to a request still in progress: byKey
// waits keyWait for its record, then gives up.
func (s *Store) byKey(ctx context.Context, kv jetstream.KeyValue, key string) (*action.Stored, error) {
	deadline := time.Now().Add(keyWait)
	for {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the idempotency key: %w", err)
		}
		r, _, err := s.get(ctx, kv, string(e.Value()))
		if err != nil {
			return nil, err
		}
		if r != nil {
			if r.A.Status == action.Pending && time.Since(r.A.CreatedAt) > repairAfter {
				if err := s.requeue(ctx, &r.A); err != nil {
					return nil, err
				}
			}
			a := r.A
			a.Published = r.P
			return &a, nil
		}
		if time.Since(e.Created()) > repairAfter {
			err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
			if err != nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return nil, fmt.Errorf("failed to remove a stale idempotency key: %w", err)
			}
			return nil, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("failed to read the idempotency key: the request that holds it has not recorded its action after %v", keyWait)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// requeue queues a pending action again if its message is not in the
// queue: its node died between writing the record and queuing it. A
// pending action's message stays in the queue until Done, so a missing one
// was never stored.
func (s *Store) requeue(ctx context.Context, a *action.Stored) error {
	st, _, err := s.open(ctx, 0)
	if err != nil {
		return err
	}
	_, err = st.GetLastMsgForSubject(ctx, s.subject(a.ID))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("failed to look for a queued action: %w", err)
	}
	return s.enqueue(ctx, a)
}

// consumer returns the workers' consumer with AckWait lease, creating or
// changing it when needed. Like open, it waits only as long as ctx allows.
func (s *Store) consumer(ctx context.Context, lease time.Duration) (jetstream.Consumer, error) {
	st, _, err := s.open(ctx, 0)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c, cur := s.cons, s.lease
	s.mu.Unlock()
	if c != nil && cur == lease {
		return c, nil
	}
	v, err := s.share(ctx, "consumer "+lease.String(), func(ctx context.Context, gen uint64) (any, error) {
		s.mu.Lock()
		c := s.cons
		done := c != nil && s.lease == lease
		s.mu.Unlock()
		if done {
			return c, nil
		}
		c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       consumerName,
			Description:   "Herald action workers of every node",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       lease,
			MaxDeliver:    -1,
			MaxAckPending: -1, // the queue's MaxMsgs bounds it
			FilterSubject: s.name + ".*",
		})
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.gen == gen {
			s.cons, s.lease = c, lease
		}
		s.mu.Unlock()
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open the action workers' consumer: %w", err)
	}
	return v.(jetstream.Consumer), nil
}

// Claim implements action.Store: the workers of a node waiting at once
// share one fetch (action/internal/claimbatch).
func (s *Store) Claim(ctx context.Context, lease, wait time.Duration) (*action.Claim, error) {
	return s.claims.Claim(ctx, lease, wait)
}

// fetch leases up to n queued actions: as many as are there now, in one
// pull request, or else the first to come within wait.
func (s *Store) fetch(ctx context.Context, lease time.Duration, n int, wait time.Duration) ([]*action.Claim, error) {
	c, err := s.consumer(ctx, lease)
	if err != nil {
		s.forget()
		return nil, err
	}
	batch, err := c.FetchNoWait(n)
	if err != nil {
		s.forget()
		return nil, fmt.Errorf("failed to claim an action: %w", err)
	}
	out, err := s.claimAll(ctx, batch)
	if len(out) > 0 || err != nil {
		return out, err
	}
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err = c.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		s.forget()
		return nil, fmt.Errorf("failed to claim an action: %w", err)
	}
	return s.claimAll(ctx, batch)
}

// claimAll makes claims of a fetched batch's messages. Once one fails,
// the messages after it are given back.
func (s *Store) claimAll(ctx context.Context, batch jetstream.MessageBatch) ([]*action.Claim, error) {
	var (
		out    []*action.Claim
		failed error
	)
	for m := range batch.Messages() {
		if failed != nil {
			_ = m.Nak()
			continue
		}
		c, err := s.claimed(ctx, m)
		if err != nil {
			failed = err
			continue
		}
		if c != nil {
			out = append(out, c)
		}
	}
	if failed != nil {
		return out, failed
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
		s.forget()
		return out, fmt.Errorf("failed to claim an action: %w", err)
	}
	return out, nil
}

// claimed makes a Claim of a queue message. The record is the truth about
// the action's progress; the message's copy stands in when the record has
// expired while the action waited. On its first delivery nobody has
// touched the action since it was queued, so the message's copy and its
// version are the record's, and the record is not read.
func (s *Store) claimed(ctx context.Context, m jetstream.Msg) (*action.Claim, error) {
	var q action.Stored
	if err := json.Unmarshal(m.Data(), &q); err != nil || q.ID == "" {
		_ = m.Term() // not an action: nobody can run it
		return nil, nil
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Nak()
		return nil, fmt.Errorf("failed to read a queued action's metadata: %w", err)
	}
	if v, err := strconv.ParseUint(m.Headers().Get(hdrVersion), 10, 64); err == nil && meta.NumDelivered == 1 {
		q.Version = v
		return &action.Claim{Stored: q, Token: m.Reply()}, nil
	}
	kv, err := s.records(ctx)
	if err != nil {
		_ = m.Nak()
		return nil, err
	}
	r, rev, err := s.get(ctx, kv, q.ID)
	if err != nil {
		_ = m.Nak()
		return nil, err
	}
	a := q
	if r != nil {
		a = r.A
		a.Published, a.Version = r.P, rev
		if a.Payload == nil && !r.final() {
			a.Payload = q.Payload
		}
	}
	return &action.Claim{Stored: a, Token: m.Reply(), Redelivered: meta.NumDelivered > 1}, nil
}

// Acknowledgements of a claim, sent to its message's reply subject (the
// Token), as JetStream's protocol defines them.
var (
	ackInProgress = []byte("+WPI")
	ackNak        = []byte("-NAK")
	ackAck        = []byte("+ACK")
)

// Touch implements action.Store: an in-progress acknowledgement restarts
// the consumer's AckWait for the message.
func (s *Store) Touch(ctx context.Context, c *action.Claim) error {
	if err := s.nc.Publish(c.Token, ackInProgress); err != nil {
		return fmt.Errorf("failed to renew the lease: %w", err)
	}
	return s.nc.FlushWithContext(ctx)
}

// Release implements action.Store: a negative acknowledgement makes
// JetStream hand the action to the next worker at once.
func (s *Store) Release(ctx context.Context, c *action.Claim) error {
	if err := s.nc.Publish(c.Token, ackNak); err != nil {
		return fmt.Errorf("failed to give the action back: %w", err)
	}
	return s.nc.FlushWithContext(ctx)
}

// Done implements action.Store. The record is marked and the message
// acknowledged at once, each in its own round trip: either may land
// without the other, and both outcomes are safe (a marked record whose
// message stays is only removed by its next claim; an acknowledged message
// whose record is not marked is never claimed again). The acknowledgement
// waits for the server's confirmation: the message is gone when Done
// returns nil.
func (s *Store) Done(ctx context.Context, c *action.Claim) error {
	kv, err := s.records(ctx)
	if err != nil {
		return err
	}
	acked := make(chan error, 1)
	go func() {
		_, err := s.nc.RequestWithContext(ctx, c.Token, ackAck)
		acked <- err
	}()
	_, err = s.change(ctx, kv, &c.Stored, record{A: c.Stored, P: true}, func(r *record, found bool) bool {
		if !found || r.P {
			return false
		}
		r.P = true
		return true
	})
	if aerr := <-acked; aerr != nil && err == nil {
		err = fmt.Errorf("failed to remove the action from the queue: %w", aerr)
	}
	return err
}

// Save implements action.Store.
func (s *Store) Save(ctx context.Context, a *action.Stored) error {
	_, err := s.update(ctx, a, false)
	return err
}

// Finish implements action.Store. The TTL is the bucket's (Options.TTL);
// the idempotency key is written again so that it lives as long as the
// final record.
func (s *Store) Finish(ctx context.Context, a *action.Stored, _ time.Duration) (bool, error) {
	return s.update(ctx, a, true)
}

func (s *Store) update(ctx context.Context, a *action.Stored, final bool) (bool, error) {
	kv, err := s.records(ctx)
	if err != nil {
		return false, err
	}
	made, err := s.change(ctx, kv, a, record{A: *a}, func(r *record, found bool) bool {
		if found && r.final() {
			return false
		}
		r.A, r.P = *a, false
		return true
	})
	if err != nil || !made || !final || a.Key == "" {
		return made, err
	}
	// On a failure the key may expire before the record, and a repeat
	// would then make a new action; the outcome itself is recorded.
	_, _ = kv.Put(ctx, idemKey(a.Caller, a.Key), []byte(a.ID))
	return true, nil
}

// change changes a's record by compare-and-set. When a.Version is known,
// the record at that version is the one a worker last read or wrote, and
// next (the change made to it) is written at once. Otherwise, or when
// another node changed it meanwhile, change reads the record, applies edit
// (which reports whether to write), and tries again until it wins. It
// reports whether it wrote, and keeps a.Version up to date.
func (s *Store) change(ctx context.Context, kv jetstream.KeyValue, a *action.Stored, next record, edit func(r *record, found bool) bool) (bool, error) {
	id := a.ID
	if a.Version != 0 {
		val, err := json.Marshal(next)
		if err != nil {
			return false, err
		}
		rev, err := kv.Update(ctx, recKey(id), val, a.Version)
		if err == nil {
			a.Version = rev
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.forget()
			return false, fmt.Errorf("failed to write the action record: %w", err)
		}
	}
	for range casTries {
		r, rev, err := s.get(ctx, kv, id)
		if err != nil {
			return false, err
		}
		found := r != nil
		if !found {
			r = &record{}
		}
		if !edit(r, found) {
			return false, nil
		}
		val, err := json.Marshal(r)
		if err != nil {
			return false, err
		}
		if found {
			rev, err = kv.Update(ctx, recKey(id), val, rev)
		} else {
			rev, err = kv.Create(ctx, recKey(id), val)
		}
		if err == nil {
			a.Version = rev
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.forget()
			return false, fmt.Errorf("failed to write the action record: %w", err)
		}
	}
	return false, fmt.Errorf("failed to write the action record %s: changed concurrently %d times", id, casTries)
}

// get reads a record and its revision; nil when there is none.
func (s *Store) get(ctx context.Context, kv jetstream.KeyValue, id string) (*record, uint64, error) {
	e, err := kv.Get(ctx, recKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, nil // not an ID this store ever made
	}
	if err != nil {
		s.forget()
		return nil, 0, fmt.Errorf("failed to read the action record: %w", err)
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("failed to read action record %s: %w", id, err)
	}
	return &r, e.Revision(), nil
}

// Local implements action.Store: every node on the NATS server reaches
// the actions.
func (s *Store) Local() bool { return false }

// Get implements action.Store.
func (s *Store) Get(ctx context.Context, id string) (*action.Stored, bool, error) {
	kv, err := s.records(ctx)
	if err != nil {
		return nil, false, err
	}
	r, _, err := s.get(ctx, kv, id)
	if err != nil || r == nil {
		return nil, false, err
	}
	a := r.A
	a.Published = r.P
	return &a, true, nil
}
