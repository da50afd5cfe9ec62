package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrHistoryGone is returned by Broker.Read when the requested position is
// older than the retained history.
var ErrHistoryGone = errors.New("history gone")

// DefaultHistoryBytes is the default byte bound of the retained history.
const DefaultHistoryBytes = 256 << 20

// DefaultDedupeWindow is how long a broker remembers a Draft.Dedupe key by
// default: longer than a source takes to notice that its consumer died and
// publish its records again from another node.
const DefaultDedupeWindow = 2 * time.Minute

// ErrClosed is returned by operations on a closed hub or broker.
var ErrClosed = errors.New("closed")

// Broker orders, retains and distributes events for a Hub. The hub owns
// subscribers and fan-out; the broker owns the log. One Broker serves one Hub.
//
// The contract every implementation keeps (and brokertest checks):
//   - Publish assigns each event the next position in ONE total order shared
//     by every node using the same log: Seq increases by one per event, and a
//     batch occupies consecutive positions, all or nothing. A cluster broker
//     may leave positions unused when publishes from different nodes collide
//     (natsbroker does); such a position holds no event, for Read, Latest or
//     deliver, and one node alone never leaves one.
//   - Every event is readable through Read before it is handed to the deliver
//     function given to Start. The hub's seam between history and live relies
//     on it: an event is either in what a replay reads or arrives live later.
//   - deliver is called from one goroutine at a time, with every event of the
//     log (published on any node) exactly once, in increasing Seq, without
//     gaps (other than unused positions). deliver may block briefly (it applies the hub's back-pressure).
//   - Retention is bounded by count, by bytes and by age; Bounds reports what is left.
//
// How the cluster brokers map onto this is written down in docs/design.md.
type Broker interface {
	// Start begins delivery. The hub calls it once, right after reading
	// Bounds in New; deliver must then receive every event after the Last
	// that Bounds reported (events before it are history, not live).
	Start(deliver func([]*Message)) error
	// Publish appends the normalized drafts as one batch and returns them as
	// messages carrying their cursors and times. A publish that returns an
	// error stored nothing, and stores nothing later, unless the error is
	// ErrUnconfirmed. Failures to reach the broker wrap ErrUnavailable, as
	// they do for every other method. Publish returns within a bound of its
	// own whatever ctx (the cluster brokers give up after 5 s; the memory
	// broker waits only for the hub's dispatchers), so a caller needs no
	// deadline of its own to be sure it returns.
	//
	// A draft with a Dedupe key whose key was appended within the broker's
	// dedupe window (at least DefaultDedupeWindow unless configured
	// otherwise) is skipped: nothing is appended for it, and its place in
	// the returned slice is nil. The check and the append are one step, so
	// two publishes of one key, concurrent or not, on any nodes, append it
	// once. A batch that holds such drafts is appended in order, but a
	// cluster broker may append its events one by one rather than as one
	// batch (natsbroker does): not on consecutive positions, and after an
	// error some of them may be in the log. Publishing the same batch
	// again appends the rest, which is how a source retries.
	Publish(ctx context.Context, drafts []Draft) ([]*Message, error)
	// Read returns retained events after position req.After that match any
	// of req.Patterns, oldest first. It returns ErrHistoryGone if events after
	// req.After have already been dropped.
	Read(ctx context.Context, req ReadRequest) (ReadResult, error)
	// Latest returns up to limit of the newest retained events of one exact
	// topic, oldest first.
	Latest(ctx context.Context, topic string, limit int) ([]*Message, error)
	// Bounds reports the log's epoch and the positions it retains.
	Bounds(ctx context.Context) (Bounds, error)
	// State returns the state of every topic that matches any of patterns:
	// the latest event of each key of each such topic, ascending by cursor,
	// all exact at ONE position (see StateSnapshot). It is kept apart from
	// the retained history, and bounded by the state's own bounds. A broker
	// that keeps none returns ErrStateUnsupported. With no patterns it reads
	// nothing and returns at once: an empty snapshot, or
	// ErrStateUnsupported, which is how the hub asks before it accepts a
	// state subscription.
	State(ctx context.Context, patterns []Pattern) (StateSnapshot, error)
	// ChangePresence appends joins and leaves, in order, in one step with
	// recording the membership they change: a join of a connection that is
	// not a member of its topic yet (and the topic below the broker's
	// member bound), a leave of a member. Each change that applies is an
	// event at the next position (TypeJoin or TypeLeave, key the
	// connection ID, data the member; a leave carries the member as it
	// joined), delivered like any; one that does not apply appends nothing.
	// So running a batch again after an error is harmless. It returns the
	// appended events. A broker that keeps no members returns
	// ErrPresenceUnsupported.
	ChangePresence(ctx context.Context, changes []PresenceChange) ([]*Message, error)
	// Presence returns the members of one exact topic, exact at a position
	// (see PresenceSnapshot), or ErrPresenceUnsupported.
	Presence(ctx context.Context, topic string) (PresenceSnapshot, error)
	// Topics lists the topics that have retained events.
	Topics(ctx context.Context) ([]TopicHistory, error)
	// Ping reports whether the broker can serve requests (readiness).
	Ping(ctx context.Context) error
	// Close stops delivery and releases resources. deliver is not called
	// after Close returns.
	Close() error
}

// ReadRequest selects a slice of history.
type ReadRequest struct {
	After    uint64    // return events with Seq > After
	Patterns []Pattern // return only events whose topic matches one of these
	Limit    int       // at most this many events (required, > 0)
	// MaxScan bounds how many retained events one call may examine, so a
	// sparse pattern cannot make one call walk the whole log; 0 means no bound.
	MaxScan int
}

// ReadResult is one page of history.
type ReadResult struct {
	Messages []*Message
	// Next is the position up to which the log was examined: every matching
	// event with After < Seq <= Next is in Messages. Continue from it.
	Next uint64
	// More is false when Next was the end of the log at the time of reading.
	More bool
}

// Bounds describes the retained part of the log.
type Bounds struct {
	Epoch string
	First uint64 // Seq of the oldest retained event; Last+1 when none is retained
	Last  uint64 // Seq of the newest event ever published in this epoch; 0 before any
}

// TopicHistory counts the retained events of one topic.
type TopicHistory struct {
	Topic  string
	Events int
}

// ClusterCounter is implemented by brokers that several nodes share: it
// sums the subscriber counts of every live node for GET /v1/topics. The hub
// hands the broker a function returning its own counts before Start; the
// broker publishes them for the other nodes until Close (see the
// implementation for how stale a count may be).
type ClusterCounter interface {
	// CountSubscribers registers a function that returns this node's
	// subscribers per pattern; the broker publishes its result
	// periodically until Close.
	CountSubscribers(local func() map[string]int)
	// ClusterSubscribers returns the subscribers per pattern summed over
	// every live node, this one included.
	ClusterSubscribers(ctx context.Context) (map[string]int, error)
}

// ErrUnconfirmed is returned by Broker.Publish when the publish reached the
// broker, or may have, and the broker could not be asked for the outcome
// before the publish's time ran out: the events may or may not be in the
// log. It wraps ErrUnavailable. Every other error of Publish means that
// nothing was stored, and nothing will be.
var ErrUnconfirmed = fmt.Errorf("%w: the publish was not confirmed", ErrUnavailable)

// Unavailable marks err, a failure to reach the broker, so that errors.Is
// finds both ErrUnavailable and err in it. Brokers return it for
// connection failures and timeouts, never for a refusal of the request
// itself: a client may retry the first, not the second.
func Unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// IsConnFailure reports whether err is a failure of the connection to a
// broker rather than an answer from it: a network error, a connection
// closed under the request, or a deadline or cancellation.
func IsConnFailure(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
