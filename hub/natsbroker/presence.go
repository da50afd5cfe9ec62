package natsbroker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
)

// Presence on NATS. Joins and leaves are events of the log, on their
// topic's subject; the members are derived from them as the state is (see
// state.go): every node's applier writes each join and leave into a third
// stream, <Stream>_PRES, one message per member and topic on
// <Subjects>_pres.m.<CLIENT>.<TOPIC> (the client's dots written as "~"):
// the join, or after the leave a tombstone (data null) that keeps an
// applier lagging behind from writing the join back. A snapshot reads that
// stream and the log's tail after the applier's position, exact at one
// position as the state's.
//
// A change applies only if it changes the membership. NATS 2.9 has no
// script, but it has conditional appends: ChangePresence reads the
// topic's members exact at a position L and then the position S of the
// topic's last event (S <= L, or it reads again); the join or leave is
// appended expecting S as the last position of the topic's subject
// (Nats-Expected-Last-Subject-Sequence). If any event of the topic, from any
// node, came in between, the append is refused and the members are read
// again. So the check and the append are one step for the topic: a
// repeated join, a join past the member bound, a second sweeper's leave
// append nothing. The price is that a join or leave waits for a quiet
// moment of its topic: on a topic published to without pause it is tried
// again until its time runs out (confirmWait).
//
// Which node's connection a member is: before a join is appended its node
// writes a marker <Subjects>_pres.n.<NODE>.<CLIENT>.<TOPIC>, and removes it
// after the leave. A marker without a member (a join refused, or a node
// that died between the two steps) is harmless: its sweep finds no member
// to make leave. Nodes that may have members register as
// <Subjects>_pres.r.<NODE>; see node.go for heartbeats and sweeps.
//
// Header of a member's message besides those of an event: the log position
// and epoch of the join or leave (hdrSeq, hdrEpoch, as for the state).

func (b *Broker) presName() string   { return b.o.Stream + "_PRES" }
func (b *Broker) presPrefix() string { return b.o.Subjects + "_pres." }

// presToken writes a client ID as one subject token.
func presToken(s string) string { return strings.ReplaceAll(s, ".", "~") }

// presMemberSubject is the subject of a client's membership of a topic.
func (b *Broker) presMemberSubject(topic, client string) string {
	return b.presPrefix() + "m." + presToken(client) + "." + topic
}

// presMarkerSubject is the subject of a node's marker of a membership.
func (b *Broker) presMarkerSubject(node, topic, client string) string {
	return b.presPrefix() + "n." + node + "." + presToken(client) + "." + topic
}

func (b *Broker) presNodeSubject(node string) string { return b.presPrefix() + "r." + node }

// presSweptSubject is the subject of a member of node that a sweep made
// leave, kept for a rejoin (see node.go).
func (b *Broker) presSweptSubject(node, topic, client string) string {
	return b.presPrefix() + "s." + node + "." + presToken(client) + "." + topic
}

func (b *Broker) presConfig() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              b.presName(),
		Description:       "Herald presence: members, and which node has each",
		Subjects:          []string{b.presPrefix() + ">"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		Replicas:          b.o.Replicas,
		Storage:           jetstream.FileStorage,
		AllowDirect:       true,
		Duplicates:        time.Second, // no message IDs are used
	}
	if b.o.Memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	return cfg
}

// presStream returns the presence stream, creating it if create is set;
// nil (and no error) if there is none and create is not set.
func (b *Broker) presStream(ctx context.Context, create bool) (jetstream.Stream, error) {
	return b.openStream(ctx, &b.pres, b.presName(), b.presConfig, create)
}

func (b *Broker) dropPresStream() { b.pres.drop() }

// NodeID implements hub.NodeBroker: the hub names its connections after
// it, and the markers of their memberships carry it.
func (b *Broker) NodeID() string { return b.node }

// member is a member as a snapshot read it.
type member struct {
	seq  uint64 // of its join
	data json.RawMessage
}

// presView is a topic's members exact at the position of the topic's last
// event, subjSeq, at which ChangePresence appends the next change.
type presView struct {
	members map[string]member
	subjSeq uint64
}

// raced is an append refused because another event of the topic came
// first; last is the topic's last position JetStream reported (0 if it
// could not be read from the refusal).
type raced struct{ last uint64 }

func (r *raced) Error() string { return "another event of the topic came first" }

// noExpect makes appendIf's append unconditional.
const noExpect = ^uint64(0)

// racedMax is how many refused appends a change makes before it appends
// without the condition (see change).
const racedMax = 4

// racedFolds bounds the topic's events that a change reads one by one
// after its append was refused, before it reads the topic's members again.
const racedFolds = 32

// ChangePresence implements hub.Broker: each change is checked against the
// topic's members and appended in one conditional step (see above). A
// change appended before an error is not appended again by a retry, but
// the retry of the batch returns it (see unreported). A rejoin (a join without
// a member) applies to a member of this node that a sweep made leave
// (node.go), with the member it had.
func (b *Broker) ChangePresence(ctx context.Context, changes []hub.PresenceChange) ([]*hub.Message, error) {
	return b.changePresence(ctx, changes, b.node)
}

// changePresence applies changes of the members of node.
func (b *Broker) changePresence(ctx context.Context, changes []hub.PresenceChange, node string) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	if len(changes) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	views := map[string]*presView{}
	var out []*hub.Message
	for _, ch := range changes {
		m, err := b.change(ctx, views, ch, node)
		if err != nil {
			b.unreported.keep(node, out)
			return nil, fmt.Errorf("failed to change presence in NATS: %w", err)
		}
		if m == nil {
			m = b.unreported.take(node, ch) // appended by a call that then failed
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// unreported holds the events that calls of ChangePresence appended before
// they failed, so that the retry of the batch, in which those changes no
// longer apply, returns them as appended: the hub counts a join that is
// not returned as refused. Bounded: past unreportedMax it is cleared.
type unreported struct {
	mu   sync.Mutex
	msgs map[string]*hub.Message
}

const unreportedMax = 4096

func unreportedKey(node, topic, client string, join bool) string {
	k := node + "\n" + topic + "\n" + client
	if join {
		return k + "\nj"
	}
	return k + "\nl"
}

func (u *unreported) keep(node string, msgs []*hub.Message) {
	if len(msgs) == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.msgs == nil || len(u.msgs)+len(msgs) > unreportedMax {
		u.msgs = make(map[string]*hub.Message, len(msgs))
	}
	for _, m := range msgs {
		u.msgs[unreportedKey(node, m.Topic, m.Key, m.Type == hub.TypeJoin)] = m
	}
}

func (u *unreported) take(node string, ch hub.PresenceChange) *hub.Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.msgs) == 0 {
		return nil
	}
	k := unreportedKey(node, ch.Topic, ch.Client, ch.Join)
	m := u.msgs[k]
	delete(u.msgs, k)
	return m
}

// change applies one change, and returns its event if it applied.
func (b *Broker) change(ctx context.Context, views map[string]*presView, ch hub.PresenceChange, node string) (*hub.Message, error) {
	backoff := time.Millisecond
	marked := false // a marker was written for this join
	swept := ""     // the record a rejoin's member came from
	// After an append was refused, this node's publishes wait while the
	// change reads the topic's events up to the refusal's position and
	// tries again, so that on a topic this node publishes to without
	// pause the next attempt races only other nodes' events. They wait
	// for no more than that (the purges that follow the append, and a
	// fresh read of the members, are made with them going again), and
	// each publish no longer than its own context allows. The
	// conditional append, not this, makes the check and the append one
	// step.
	locked := false
	unlock := func() {
		if locked {
			b.pubs.release()
			locked = false
		}
	}
	defer unlock()
	races := 0
	for {
		v := views[ch.Topic]
		if v == nil {
			var err error
			if v, err = b.presView(ctx, ch.Topic); err != nil {
				return nil, err
			}
			views[ch.Topic] = v
		}
		old, isMember := v.members[ch.Client]
		d := hub.Draft{Topic: ch.Topic, Key: ch.Client}
		if ch.Join && ch.Member == nil {
			var err error
			if ch.Member, swept, err = b.swept(ctx, ch, node); err != nil || ch.Member == nil {
				return nil, err
			}
		}
		switch {
		case ch.Join && isMember:
			return nil, nil
		case ch.Join && len(v.members) >= b.o.PresenceMaxMembers:
			unlock()
			if marked { // written on an attempt that the topic's events raced
				return nil, b.purgeSubject(ctx, b.presMarkerSubject(node, ch.Topic, ch.Client), 0)
			}
			return nil, nil
		case ch.Join:
			d.Type, d.Data = hub.TypeJoin, ch.Member
		case !isMember:
			return nil, nil
		default:
			d.Type, d.Data = hub.TypeLeave, old.data
		}
		if ch.Join && !marked {
			if err := b.putMarker(ctx, node, ch.Topic, ch.Client); err != nil {
				return nil, err
			}
			marked = true
		}
		when := time.Now().UTC().Truncate(time.Microsecond)
		expect, id := v.subjSeq, ""
		if races >= racedMax {
			// Other nodes append to the topic without pause: the view is
			// folded to the topic's last event, but the next one always
			// comes first. Unconditional, the append relies on what else
			// holds: only this node changes its connections' memberships
			// (in order, from one goroutine), and a sweeper's leave is
			// named by the member's join, so that a second sweeper's within
			// the duplicate window is stored once. What may not hold: a
			// join may pass the member bound if other nodes join at once.
			expect = noExpect
			if d.Type == hub.TypeLeave {
				id = "pl." + strconv.FormatUint(old.seq, 36) + "." + ch.Topic + "." + ch.Client
			}
		}
		b.changeStep("append")
		seq, err := b.appendIf(ctx, d, expect, when, locked, id)
		var r *raced
		if errors.As(err, &r) {
			races++
			if !locked {
				if err := b.pubs.hold(ctx); err != nil {
					return nil, hub.Unavailable(fmt.Errorf("failed to hold this node's publishes back for topic %s: %w", ch.Topic, err))
				}
				locked = true
				b.changeStep("held")
			}
			if ctx.Err() == nil && b.fold(ctx, v, ch.Topic, r.last) == nil {
				continue // the view is at the topic's last event again
			}
			// The members are read again, after a pause: the node's
			// publishes need not wait for that.
			unlock()
			delete(views, ch.Topic)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, hub.Unavailable(fmt.Errorf("topic %s busy: %w", ch.Topic, ctx.Err()))
			}
			backoff = min(2*backoff, 50*time.Millisecond)
			continue
		}
		unlock()
		if err != nil {
			return nil, err
		}
		b.changeStep("appended")
		v.subjSeq = seq
		if ch.Join {
			v.members[ch.Client] = member{seq: seq, data: d.Data}
			if swept != "" {
				if err := b.purgeSubject(ctx, swept, 0); err != nil { // the swept member is back
					b.o.Logger.Warn("nats broker: failed to remove a swept member's record", "err", err)
				}
			}
		} else {
			delete(v.members, ch.Client)
			if err := b.purgeSubject(ctx, b.presMarkerSubject(node, ch.Topic, ch.Client), 0); err != nil {
				// Harmless: the marker's sweep finds no member.
				b.o.Logger.Warn("nats broker: failed to remove a membership's marker", "err", err)
			}
		}
		return hub.NewMessage(hub.Event{
			ID: hub.Cursor{Epoch: b.currentEpoch(), Seq: seq}, Topic: d.Topic, Type: d.Type, Key: d.Key, Data: d.Data, Time: when,
		}), nil
	}
}

// changeStep calls the test's changeHook, if any.
func (b *Broker) changeStep(step string) {
	if b.changeHook != nil {
		b.changeHook(step)
	}
}

// swept returns the member of a rejoin as a sweep made it leave, and the
// subject of that record; nil if no sweep did.
func (b *Broker) swept(ctx context.Context, ch hub.PresenceChange, node string) (json.RawMessage, string, error) {
	s, err := b.presStream(ctx, false)
	if err != nil || s == nil {
		return nil, "", err
	}
	subj := b.presSweptSubject(node, ch.Topic, ch.Client)
	rm, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("failed to read stream %s: %w", b.presName(), b.fail(err))
	}
	if rm.Header.Get(hdrEpoch) != b.currentEpoch() {
		return nil, "", nil
	}
	return json.RawMessage(rm.Data), subj, nil // (purged whole: one sweep writes it)
}

// putMarker records that node has (or is about to have) client as a member
// of topic.
func (b *Broker) putMarker(ctx context.Context, node, topic, client string) error {
	if _, err := b.presStream(ctx, true); err != nil {
		return err
	}
	if node == b.node && !b.hasMembers.Load() {
		// Registered before its first member, so that it is swept if
		// it dies before its next heartbeat.
		if _, err := b.js.Publish(ctx, b.presNodeSubject(node), nil); err != nil {
			return fmt.Errorf("failed to register the node: %w", b.fail(err))
		}
		b.hasMembers.Store(true)
	}
	if _, err := b.js.Publish(ctx, b.presMarkerSubject(node, topic, client), []byte(client+"\n"+topic)); err != nil {
		return fmt.Errorf("failed to write a membership's marker: %w", b.fail(err))
	}
	return nil
}

// purgeSubject removes the presence stream's message of subj if it is at
// position upTo or before (0: whatever it is), so that a message written
// again meanwhile stays.
func (b *Broker) purgeSubject(ctx context.Context, subj string, upTo uint64) error {
	s, err := b.presStream(ctx, true)
	if err != nil {
		return err
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subj)}
	if upTo > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(upTo+1))
	}
	if err := s.Purge(ctx, opts...); err != nil {
		return b.fail(err)
	}
	return nil
}

// appendIf appends d to the log if the last event of its topic is at
// subjSeq, and returns its position; a *raced if it is not. An attempt
// whose acknowledgement is lost is sent again with the same message ID, so
// the stream answers with the first position if it stored it.
//
// It goes through the sender (sender.go), as the node's publishes do, so
// that it never lands inside this node's batch, and holds b.pubs shared
// unless the caller holds it alone (locked): a change that holds it then
// races no other change of this node either.
//
// With subjSeq noExpect the append is unconditional, and id (if not
// empty) its message ID.
func (b *Broker) appendIf(ctx context.Context, d hub.Draft, subjSeq uint64, when time.Time, locked bool, id string) (uint64, error) {
	if !locked {
		if err := b.pubs.share(ctx); err != nil {
			return 0, hub.Unavailable(fmt.Errorf("failed to wait for another presence change of this node: %w", err))
		}
		defer b.pubs.unshare()
	}
	if id == "" {
		id = b.nextID()
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(id)}
	if subjSeq != noExpect {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(subjSeq))
	}
	backoff := 20 * time.Millisecond
	for {
		ack, refused, err := b.pipelineOne(ctx, encode(b.prefix, d, when), opts...)
		if err == nil {
			err = refused
		}
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return ack.Sequence, nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrWrongLastSeq:
			// "wrong last sequence: N"
			_, n, _ := strings.Cut(apiErr.Description, ": ")
			last, _ := strconv.ParseUint(n, 10, 64)
			return 0, &raced{last: last}
		case errors.Is(noAnswer(err), errNoAnswer) && ctx.Err() == nil:
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, 250*time.Millisecond)
		case errors.Is(noAnswer(err), errNoAnswer):
			return 0, fmt.Errorf("%w: %v", hub.ErrUnconfirmed, err)
		default:
			return 0, b.fail(err)
		}
	}
}

// fold brings a view whose append was refused to the topic's last
// position, last, by reading the topic's events after the view's position
// and applying the joins and leaves among them: on a busy topic most are
// ordinary events, and reading them is cheaper than reading the members
// again. A few are read one by one (direct gets), more with a consumer.
func (b *Broker) fold(ctx context.Context, v *presView, topic string, last uint64) error {
	if last <= v.subjSeq {
		return errors.New("no later position known")
	}
	s := b.currentStream()
	epoch := b.currentEpoch()
	next := v.subjSeq + 1
	for range racedFolds {
		rm, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(b.prefix+topic))
		if err != nil {
			return err
		}
		if rm.Sequence > last {
			return errors.New("the topic's last position is gone")
		}
		m, _, err := decode(epoch, rm.Sequence, rm.Subject, rm.Header, rm.Data, b.prefix)
		switch {
		case err != nil || !m.IsPresence():
		case m.Type == hub.TypeJoin:
			v.members[m.Key] = member{seq: m.ID.Seq, data: m.Data}
		default:
			delete(v.members, m.Key)
		}
		v.subjSeq = rm.Sequence
		if rm.Sequence == last {
			return nil
		}
		next = rm.Sequence + 1
	}
	if err := b.addTail(ctx, topic, hub.Cursor{Epoch: epoch, Seq: v.subjSeq}, last, v.members); err != nil {
		return err
	}
	v.subjSeq = last
	return nil
}

// presView reads a topic's members exact at the position of its last event.
func (b *Broker) presView(ctx context.Context, topic string) (*presView, error) {
	for i := 0; ; i++ {
		var last hub.Cursor
		var ms map[string]member
		var err error
		if i == 0 {
			last, ms, err = b.members(ctx, topic)
		} else {
			last, ms, err = b.presenceSnapshot(ctx, topic) // not what delivery has folded
		}
		if err != nil {
			return nil, err
		}
		// The topic's last event, read after the members: if it is at or
		// before their position, nothing of the topic came after it. If it
		// is after, the topic's joins and leaves up to it are added: an
		// event past the position is a newer one, or one of a batch still
		// being written (which holds no joins or leaves, being of
		// publishers).
		var s uint64
		rm, err := b.currentStream().GetLastMsgForSubject(ctx, b.prefix+topic)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return nil, fmt.Errorf("failed to read stream %s: %w", b.o.Stream, b.fail(err))
		default:
			s = rm.Sequence
		}
		if b.currentEpoch() != last.Epoch {
			if i < 3 {
				continue // the log was created again meanwhile
			}
			return nil, hub.Unavailable(errors.New("the log was created again meanwhile"))
		}
		if s > last.Seq {
			if err := b.addTail(ctx, topic, last, s, ms); err != nil {
				return nil, err
			}
		}
		return &presView{members: ms, subjSeq: s}, nil
	}
}

// membersNow returns a topic's members exact at a position at or after
// the log's end when it is called (as on the other brokers, a node reads
// its own joins and leaves). Kept members may be behind the end (delivery
// is); the topic's joins and leaves between are read from the log, if
// there are any: the topic's last event, read after the end, tells.
func (b *Broker) membersNow(ctx context.Context, topic string) (hub.Cursor, map[string]member, error) {
	for range 3 {
		at, ms, err := b.members(ctx, topic)
		if err != nil {
			return hub.Cursor{}, nil, err
		}
		bd, err := b.Bounds(ctx)
		if err != nil {
			return hub.Cursor{}, nil, err
		}
		var s uint64
		rm, err := b.currentStream().GetLastMsgForSubject(ctx, b.prefix+topic)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return hub.Cursor{}, nil, fmt.Errorf("failed to read stream %s: %w", b.o.Stream, b.fail(err))
		default:
			s = rm.Sequence
		}
		if bd.Epoch != at.Epoch {
			continue // the log was created again meanwhile
		}
		// Every event of the topic up to bd.Last is at or before s. Past
		// bd.Last, s may be in a batch still being written: the position
		// reported is not past bd.Last (or what was kept).
		end := max(at.Seq, bd.Last)
		if s > at.Seq {
			if err := b.addTail(ctx, topic, at, min(s, end), ms); err != nil {
				return hub.Cursor{}, nil, err
			}
		}
		return hub.Cursor{Epoch: at.Epoch, Seq: end}, ms, nil
	}
	return hub.Cursor{}, nil, hub.Unavailable(errors.New("the log was created again meanwhile"))
}

// addTail applies the topic's joins and leaves after last up to to.
func (b *Broker) addTail(ctx context.Context, topic string, last hub.Cursor, to uint64, ms map[string]member) error {
	r, err := b.openReader(ctx, b.prefix+topic, last.Seq+1)
	if err != nil {
		return err
	}
	defer r.close()
	for !r.done() {
		page, err := r.fetch(ctx, 256)
		if err != nil {
			return err
		}
		for _, rm := range page {
			if rm.seq > to {
				return nil
			}
			m, _, err := decode(last.Epoch, rm.seq, rm.subject, rm.header, rm.data, b.prefix)
			switch {
			case err != nil || !m.IsPresence():
			case m.Type == hub.TypeJoin:
				ms[m.Key] = member{seq: m.ID.Seq, data: m.Data}
			default:
				delete(ms, m.Key)
			}
		}
	}
	return nil
}

// Presence implements hub.Broker: the members exact at a position, kept
// by this node (presence_cache.go) or read as the state's snapshot is.
func (b *Broker) Presence(ctx context.Context, topic string) (hub.PresenceSnapshot, error) {
	if b.closed.Load() {
		return hub.PresenceSnapshot{}, hub.ErrClosed
	}
	last, ms, err := b.membersNow(ctx, topic)
	if err != nil {
		return hub.PresenceSnapshot{}, fmt.Errorf("failed to read presence from NATS: %w", err)
	}
	list := make([]member, 0, len(ms))
	for _, m := range ms {
		list = append(list, m)
	}
	slices.SortFunc(list, func(x, y member) int { return cmp.Compare(x.seq, y.seq) })
	out := hub.PresenceSnapshot{Last: last, Members: make([]json.RawMessage, len(list))}
	for i, m := range list {
		out.Members[i] = m.data
	}
	return out, nil
}

// presenceSnapshot returns a topic's members by client, exact at the
// position it returns: see snapshot, which it follows step by step.
func (b *Broker) presenceSnapshot(ctx context.Context, topic string) (hub.Cursor, map[string]member, error) {
	if b.closed.Load() {
		return hub.Cursor{}, nil, hub.ErrClosed
	}
	wctx, cancel := context.WithTimeout(ctx, stateWait)
	defer cancel()
	for {
		p := b.applied.Load()
		if p == nil {
			if !b.started.Load() {
				return hub.Cursor{}, nil, errors.New("the broker is not started")
			}
		} else if last, ms, ok, err := b.presenceAt(ctx, topic, *p); err != nil || ok {
			return last, ms, err
		}
		select {
		case b.flushNow <- struct{}{}:
		default:
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return hub.Cursor{}, nil, err
			}
			return hub.Cursor{}, nil, hub.Unavailable(errors.New("this node's applier is behind the log's retention"))
		}
	}
}

// presenceAt is presenceSnapshot with the applier at p; ok is false if the
// log's events after p are no longer all retained, or of another epoch.
func (b *Broker) presenceAt(ctx context.Context, topic string, p applied) (hub.Cursor, map[string]member, bool, error) {
	bd, err := b.Bounds(ctx)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch || p.seq+1 < bd.First {
		return hub.Cursor{}, nil, false, nil
	}
	entries := map[string]*stateEntry{} // by client
	if err := b.readMembers(ctx, topic, p.epoch, entries); err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd, err = b.Bounds(ctx); err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch {
		return hub.Cursor{}, nil, false, nil
	}
	for _, e := range entries {
		if e.seq > bd.Last {
			return hub.Cursor{}, nil, false, nil
		}
	}
	pats := []hub.Pattern{hub.MustPattern(topic)}
	after := p.seq
	for after < bd.Last {
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: pats, Limit: max(b.o.Size, 256)})
		if errors.Is(err, hub.ErrHistoryGone) {
			return hub.Cursor{}, nil, false, nil
		}
		if err != nil {
			return hub.Cursor{}, nil, false, err
		}
		for _, m := range res.Messages {
			if m.ID.Seq > bd.Last || !m.IsPresence() {
				continue
			}
			if e := entries[m.Key]; e == nil || e.seq < m.ID.Seq {
				e = &stateEntry{seq: m.ID.Seq, topic: m.Topic, m: m}
				if m.Type != hub.TypeJoin {
					e.m = nil
				}
				entries[m.Key] = e
			}
		}
		if res.Next <= after || !res.More && res.Next < bd.Last {
			break
		}
		after = res.Next
	}
	info, err := b.info(ctx)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = info.State.LastSeq + 1
	}
	if p.seq+1 < first || epochOf(info) != p.epoch {
		return hub.Cursor{}, nil, false, nil
	}
	ms := make(map[string]member, len(entries))
	for c, e := range entries {
		if e.m != nil {
			ms[c] = member{seq: e.seq, data: e.m.Data}
		}
	}
	return hub.Cursor{Epoch: bd.Epoch, Seq: bd.Last}, ms, true, nil
}

// readMembers adds the presence stream's messages of topic, of the given
// epoch, to entries by client.
func (b *Broker) readMembers(ctx context.Context, topic, epoch string, entries map[string]*stateEntry) error {
	s, err := b.presStream(ctx, false)
	if err != nil || s == nil {
		return err
	}
	r, err := b.openReaderOn(ctx, s, b.presName(), b.presPrefix()+"m.*."+topic, 1)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		b.dropPresStream()
		return nil
	}
	if err != nil {
		return err
	}
	defer r.close()
	for !r.done() {
		page, err := r.fetch(ctx, 4096)
		if err != nil {
			return err
		}
		for _, rm := range page {
			if rm.header.Get(hdrEpoch) != epoch {
				continue
			}
			seq, err := strconv.ParseUint(rm.header.Get(hdrSeq), 10, 64)
			client := rm.header.Get(hdrKey)
			if err != nil || client == "" {
				b.o.Logger.Warn("nats broker: skipping an unreadable member", "subject", rm.subject)
				continue
			}
			e := &stateEntry{seq: seq, topic: topic}
			if string(rm.data) != "null" {
				e.m = hub.NewMessage(hub.Event{Topic: topic, Key: client, Data: rm.data})
			}
			if old := entries[client]; old == nil || old.seq < seq {
				entries[client] = e
			}
		}
	}
	return nil
}
