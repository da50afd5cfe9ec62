package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
)

// memPresence is the memory broker's members: per topic, each member's
// join event by connection ID. Its owner (the broker) holds its lock around
// every call, the lock appends take, which makes a snapshot exact at its
// position. It is apart from the history and from the state of keyed
// topics, and bounded per topic by maxMembers.
type memPresence struct {
	topics     map[string]map[string]*Message
	maxMembers int
}

func newMemPresence(maxMembers int) *memPresence {
	return &memPresence{topics: make(map[string]map[string]*Message), maxMembers: maxMembers}
}

// draft returns the event a change appends, and false if it changes
// nothing: a join of a member, a join of a full topic, a leave of a
// connection that is not a member. A leave carries the member as it joined.
func (p *memPresence) draft(ch PresenceChange) (Draft, bool) {
	ms := p.topics[ch.Topic]
	old := ms[ch.Client]
	switch {
	case ch.Join && (old != nil || len(ms) >= p.maxMembers || ch.Member == nil):
		// (A rejoin, without a member: nothing here is ever swept.)
		return Draft{}, false
	case ch.Join:
		return Draft{Topic: ch.Topic, Type: TypeJoin, Key: ch.Client, Data: ch.Member}, true
	case old == nil:
		return Draft{}, false
	default:
		return Draft{Topic: ch.Topic, Type: TypeLeave, Key: ch.Client, Data: old.Data}, true
	}
}

// apply records an appended join or leave.
func (p *memPresence) apply(m *Message) {
	ms := p.topics[m.Topic]
	if m.Type == TypeJoin {
		if ms == nil {
			ms = make(map[string]*Message)
			p.topics[m.Topic] = ms
		}
		ms[m.Key] = m
		return
	}
	delete(ms, m.Key)
	if len(ms) == 0 {
		delete(p.topics, m.Topic)
	}
}

// snapshot returns a topic's members in the order they joined.
func (p *memPresence) snapshot(topic string) []json.RawMessage {
	ms := p.topics[topic]
	joins := make([]*Message, 0, len(ms))
	for _, m := range ms {
		joins = append(joins, m)
	}
	slices.SortFunc(joins, func(a, b *Message) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]json.RawMessage, len(joins))
	for i, m := range joins {
		out[i] = m.Data
	}
	return out
}

// ChangePresence implements Broker: the changes that apply are appended and
// recorded under the lock Publish appends under.
func (b *MemoryBroker) ChangePresence(ctx context.Context, changes []PresenceChange) ([]*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	now := b.now()
	var msgs []*Message
	for _, ch := range changes {
		d, ok := b.presence.draft(ch)
		if !ok {
			continue
		}
		b.last++
		m := NewMessage(Event{ID: Cursor{Epoch: b.epoch, Seq: b.last}, Topic: d.Topic, Type: d.Type, Key: d.Key, Data: d.Data, Time: now})
		b.push(m)
		b.presence.apply(m)
		msgs = append(msgs, m)
	}
	b.expireLocked(now)
	if b.deliver != nil && len(msgs) > 0 {
		b.deliver(msgs)
	}
	return msgs, nil
}

// Presence implements Broker. It reads under the lock appends take, so the
// snapshot is exact at the position it reports.
func (b *MemoryBroker) Presence(ctx context.Context, topic string) (PresenceSnapshot, error) {
	if err := b.lockToRead(ctx); err != nil {
		return PresenceSnapshot{}, err
	}
	defer b.mu.Unlock()
	return PresenceSnapshot{Last: Cursor{Epoch: b.epoch, Seq: b.last}, Members: b.presence.snapshot(topic)}, nil
}
