package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The types of presence events: a connection joined or left a topic's
// members. They are in the server's reserved namespace, so no publisher can
// forge one.
const (
	TypeJoin  = "herald.join"
	TypeLeave = "herald.leave"
)

// MaxInfoBytes bounds the JSON of a member's info.
const MaxInfoBytes = 1024

// DefaultPresenceMaxMembers is the default bound of one topic's members.
const DefaultPresenceMaxMembers = 10000

// ErrInvalidPresence is returned by Subscribe for a presence request that
// cannot be served: presence on a wildcard pattern, or info that is not a
// JSON object of at most MaxInfoBytes.
var ErrInvalidPresence = errors.New("invalid presence request")

// ErrPresenceUnsupported is returned by Broker.Presence when the broker
// keeps no members.
var ErrPresenceUnsupported = errors.New("this broker keeps no presence")

// PresenceChange is one join or leave for Broker.ChangePresence.
type PresenceChange struct {
	Topic  string
	Client string // the connection ID (Client.ConnID), the event's key
	Join   bool
	// Member is the member's JSON object, {"client","user","info"}, for a
	// join; a leave carries the member as it joined (the broker has it). A
	// join without a Member is a rejoin (see NodeReviver): it applies only
	// to a member of this node that a sweep made leave, with the member it
	// had.
	Member json.RawMessage
}

// PresenceSnapshot is a topic's members, exact at position Last: it
// reflects every join and leave at or before Last and none after.
type PresenceSnapshot struct {
	Last    Cursor
	Members []json.RawMessage // member objects in the order they joined
}

// Presence is a topic's members as GET /v1/topics/{topic}/presence shows
// them: the snapshot, the number of members (connections) and of distinct
// users among them (members without a user are not counted as users).
type Presence struct {
	PresenceSnapshot
	Clients int
	Users   int
}

// isPresence reports whether m is a join or a leave.
func (m *Message) isPresence() bool {
	return len(m.Type) == len(TypeJoin) && m.Type == TypeJoin || len(m.Type) == len(TypeLeave) && m.Type == TypeLeave
}

// IsPresence reports whether m is a presence event (herald.join or herald.leave).
func (m *Message) IsPresence() bool { return m.isPresence() }

// Presence returns the members of one exact topic from the hub's broker.
// Errors wrap ErrInvalidTopic, ErrUnavailable, ErrClosed or
// ErrPresenceUnsupported.
func (h *Hub) Presence(ctx context.Context, topic string) (Presence, error) {
	if err := ValidateTopic(topic); err != nil {
		return Presence{}, err
	}
	snap, err := h.broker.Presence(ctx, topic)
	if err != nil {
		return Presence{}, fmt.Errorf("failed to read presence: %w", err)
	}
	users := make(map[string]struct{})
	for _, m := range snap.Members {
		if u, ok := memberUser(m); ok {
			users[u] = struct{}{}
		}
	}
	return Presence{PresenceSnapshot: snap, Clients: len(snap.Members), Users: len(users)}, nil
}

// ValidateInfo checks a member's info: a JSON object of at most
// MaxInfoBytes once compacted, or nothing (nil or null).
func ValidateInfo(info json.RawMessage) error {
	t := bytes.TrimSpace(info)
	if len(t) == 0 || string(t) == "null" {
		return nil
	}
	if t[0] != '{' || len(t) > 64*MaxInfoBytes || !json.Valid(t) {
		return fmt.Errorf("%w: info must be a JSON object", ErrInvalidPresence)
	}
	// The bound is on the JSON as the member carries it, compacted.
	var buf bytes.Buffer
	if err := json.Compact(&buf, t); err != nil || buf.Len() > MaxInfoBytes {
		return fmt.Errorf("%w: info is %d bytes of compact JSON, more than %d", ErrInvalidPresence, buf.Len(), MaxInfoBytes)
	}
	return nil
}

// memberJSON encodes a member, {"client":ID,"user":SUB-or-null,"info":OBJECT-or-null},
// with client first and user second, the layout memberUser reads.
func memberJSON(client, user string, info json.RawMessage) []byte {
	b := make([]byte, 0, 48+len(client)+len(user)+len(info))
	b = append(b, `{"client":"`...)
	b = append(b, client...)
	b = append(b, `","user":`...)
	if user == "" {
		b = append(b, "null"...)
	} else {
		u, _ := json.Marshal(user) // a string always encodes
		b = append(b, u...)
	}
	b = append(b, `,"info":`...)
	var buf bytes.Buffer
	if t := bytes.TrimSpace(info); len(t) == 0 || json.Compact(&buf, t) != nil {
		b = append(b, "null"...)
	} else {
		b = append(b, buf.Bytes()...)
	}
	return append(b, '}')
}

// memberUser returns the user of a member object as the hub encodes it
// (memberJSON), and false for a member without one.
func memberUser(member []byte) (string, bool) {
	const userField = `","user":`
	i := bytes.Index(member, []byte(userField))
	if i < 0 {
		return "", false
	}
	rest := member[i+len(userField):]
	if len(rest) == 0 || rest[0] != '"' {
		return "", false
	}
	// The end of the JSON string: the first quote not escaped.
	for j := 1; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			var u string
			if json.Unmarshal(rest[:j+1], &u) != nil {
				return "", false
			}
			return u, true
		}
	}
	return "", false
}

// ConnID is the connection's ID, unique across a cluster: the hub's node
// ID and the client's number on it. It is derived, not stored, to keep
// Client in its size class.
func (c *Client) ConnID() string {
	return c.hub.node + "-" + strconv.FormatUint(c.id, 36)
}

// NodeID is the node part of the hub's connection IDs.
func (h *Hub) NodeID() string { return h.node }

// NodeBroker is implemented by brokers that several nodes share and that
// make the members of a node that died leave: the hub names its connections
// after the broker's node ID, so the broker can tell whose members are whose.
type NodeBroker interface {
	NodeID() string
}

// NodeReviver is implemented by brokers that can find their node taken
// for dead while it was alive (its heartbeat expired, and other nodes made
// its members leave). The hub registers, before Start, a function that the
// broker calls then: it queues a rejoin of every membership the node's
// connections hold.
type NodeReviver interface {
	OnRevive(func())
}

// rejoinAll queues a rejoin (a join without a member) of every membership
// of the hub's open clients.
func (h *Hub) rejoinAll() {
	h.mu.Lock()
	cs := make([]*Client, 0, len(h.clients))
	for _, c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		for _, sb := range c.subs {
			if sb.member {
				c.hub.pres.add(PresenceChange{Topic: sb.raw, Client: c.ConnID(), Join: true})
			}
		}
		c.mu.Unlock()
	}
}

// The presence publisher's bounds: changes per broker call, and how long a
// call may take.
const (
	presenceBatch = 512
	presenceWait  = 5 * time.Second
	// DefaultPresenceQueue bounds the joins waiting to be published.
	DefaultPresenceQueue = 1 << 16
)

// presencer publishes the hub's joins and leaves, in the order they were
// made, from one goroutine, in batches, so that subscribing or closing a
// connection never waits for the broker.
//
// Its queue is bounded for joins: past Options.PresenceQueue a join is
// refused (the connection is then not a member; counted in
// Stats.PresenceRefused). A leave is always queued: each follows a join
// that was, so leaves are bounded by the members the node has. A batch the
// broker fails is retried until it goes through or the hub closes: joins and
// leaves apply only when they change something (a join of a client not yet
// a member, a leave of a member), so a retry of one that did apply is a
// no-op.
//
// Lock order: presencer.mu is taken under shard.mu and Client.mu, and takes
// no other lock.
type presencer struct {
	h     *Hub
	mu    sync.Mutex
	queue []PresenceChange
	max   int
	shut  bool // closed: changes are ignored
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	// ctx bounds run's broker calls; close ends it when its own time is
	// up, so that run is gone before the broker closes.
	ctx    context.Context
	cancel context.CancelFunc

	refused atomic.Int64 // joins refused here or by the broker
	failed  atomic.Int64 // broker calls that failed (and were retried)
}

func newPresencer(h *Hub, max int) *presencer {
	ctx, cancel := context.WithCancel(context.Background())
	return &presencer{h: h, max: max, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, cancel: cancel}
}

// add queues a change. It reports false for a join refused because the
// queue is full or the hub is closing.
func (p *presencer) add(ch PresenceChange) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut || ch.Join && len(p.queue) >= p.max {
		if ch.Join {
			p.refused.Add(1)
		}
		return false
	}
	p.queue = append(p.queue, ch)
	if len(p.queue) == 1 {
		signal(p.wake)
	}
	return true
}

// take removes up to presenceBatch changes from the front of the queue.
func (p *presencer) take() []PresenceChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), presenceBatch)
	if n == 0 {
		return nil
	}
	out := make([]PresenceChange, n)
	copy(out, p.queue)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil // let a burst's array go
	}
	return out
}

// run is the publisher goroutine; it ends when close has flushed.
func (p *presencer) run() {
	defer close(p.done)
	backoff := 50 * time.Millisecond
	for {
		batch := p.take()
		if batch == nil {
			select {
			case <-p.wake:
				continue
			case <-p.stop:
				return
			}
		}
		for {
			if p.publish(p.ctx, batch) {
				backoff = 50 * time.Millisecond
				break
			}
			select {
			case <-time.After(backoff):
				backoff = min(2*backoff, 2*time.Second)
			case <-p.stop:
				p.requeue(batch) // close flushes it, first
				return
			}
		}
	}
}

// requeue puts a batch back at the front of the queue.
func (p *presencer) requeue(batch []PresenceChange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(batch, p.queue...)
}

// publish applies one batch, within ctx; false if the broker failed it.
func (p *presencer) publish(ctx context.Context, batch []PresenceChange) bool {
	ctx, cancel := context.WithTimeout(ctx, presenceWait)
	defer cancel()
	msgs, err := p.h.broker.ChangePresence(ctx, batch)
	if errors.Is(err, ErrPresenceUnsupported) {
		// Nothing to retry: such a broker records no member.
		for _, ch := range batch {
			if ch.Join && ch.Member != nil {
				p.refused.Add(1)
			}
		}
		return true
	}
	if err != nil {
		p.failed.Add(1)
		p.h.opts.Logger.Warn("hub: failed to publish joins and leaves; retrying", "err", err)
		return false
	}
	// Joins that did not apply: a full topic (a repeated join cannot
	// happen from one hub). A rejoin that does not apply is the usual case
	// (no sweep took the member) and no refusal.
	type key struct{ topic, client string }
	var joined map[key]bool
	for _, m := range msgs {
		if m.Type == TypeJoin {
			if joined == nil {
				joined = make(map[key]bool, len(msgs))
			}
			joined[key{m.Topic, m.Key}] = true
		}
	}
	for _, ch := range batch {
		if ch.Join && ch.Member != nil && !joined[key{ch.Topic, ch.Client}] {
			p.refused.Add(1)
		}
	}
	p.h.published.Add(int64(len(msgs)))
	return true
}

// close stops the goroutine and then publishes what is queued (the leaves
// of the connections still open, which the hub queued first), trying each
// batch once, within ctx. Further changes are ignored.
func (p *presencer) close(ctx context.Context) {
	p.mu.Lock()
	if p.shut {
		p.mu.Unlock()
		return
	}
	p.shut = true
	p.mu.Unlock()
	close(p.stop)
	defer p.cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		// The batch under way gives up (run requeues it): run must
		// end before the hub closes the broker under it.
		p.cancel()
		<-p.done
	}
	for ctx.Err() == nil {
		batch := p.take()
		if batch == nil || !p.publish(ctx, batch) {
			return
		}
	}
}

// queueJoins queues a join for each pattern of req (exact topics: Subscribe
// checked) whose subscription is not a member yet, and marks those that were
// queued. shard.mu and c.mu are held on entry.
func (c *Client) queueJoinsLocked(req *SubscribeRequest) {
	var member []byte
	for _, p := range req.Patterns {
		sb := c.subs[p.raw]
		if sb == nil || sb.member {
			continue
		}
		if member == nil {
			member = memberJSON(c.ConnID(), req.User, req.Info)
		}
		sb.member = c.hub.pres.add(PresenceChange{Topic: p.raw, Client: c.ConnID(), Join: true, Member: member})
	}
}

// queueLeaveLocked queues the leave of sb's topic if c is a member of it.
// c.mu is held on entry.
func (c *Client) queueLeaveLocked(sb *sub) {
	if sb.member {
		sb.member = false
		c.hub.pres.add(PresenceChange{Topic: sb.raw, Client: c.ConnID()})
	}
}

// checkPresence validates the presence fields of a subscribe.
func (req *SubscribeRequest) checkPresence() error {
	if !req.Presence {
		return nil // info without presence describes nothing: ignored
	}
	for _, p := range req.Patterns {
		if !p.Literal() {
			return fmt.Errorf("%w: presence needs exact topics, and %q is a pattern", ErrInvalidPresence, p.raw)
		}
	}
	return ValidateInfo(req.Info)
}

// leaveAll queues the leaves of every open client's memberships, at Close:
// a library user may close the hub before its transports close their
// clients.
func (h *Hub) leaveAll() {
	h.mu.Lock()
	cs := make([]*Client, 0, len(h.clients))
	for _, c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		for _, sb := range c.subs {
			c.queueLeaveLocked(sb)
		}
		c.mu.Unlock()
	}
}
