package hub

import (
	"context"
	"errors"
	"slices"
)

// Default bounds of the memory broker's state.
const (
	DefaultStateMaxKeys  = 10000
	DefaultStateMaxBytes = 64 << 20
)

// ErrStateUnsupported is returned by Broker.State when the broker keeps no
// state of keyed events.
var ErrStateUnsupported = errors.New("this broker keeps no state of keyed topics")

// StateSnapshot is the state of one or more topics: the latest event of
// each key of each, exact at position Last. It reflects every event at or
// before Last and none after, so the snapshot and the topics' events after
// Last make the current state.
type StateSnapshot struct {
	Last   Cursor
	Events []*Message // ascending by cursor
}

// State returns the state of one exact topic from the hub's broker: the
// latest event of each key. Errors wrap ErrInvalidTopic, ErrUnavailable,
// ErrClosed or ErrStateUnsupported.
func (h *Hub) State(ctx context.Context, topic string) (StateSnapshot, error) {
	if err := ValidateTopic(topic); err != nil {
		return StateSnapshot{}, err
	}
	return h.broker.State(ctx, []Pattern{{raw: topic}})
}

// stateEntry is one key's latest event in the memory broker's state. It is
// on two lists ordered by write, oldest first: its topic's (byTopic), which
// bounds the keys per topic and is the snapshot's cursor order, and the
// broker's (byAll), which bounds the bytes of every topic together.
type stateEntry struct {
	m     *Message
	topic *topicState
	links [2]struct{ prev, next *stateEntry }
}

// The lists an entry is on, indexes of stateEntry.links.
const (
	byTopic = iota
	byAll
)

// entryList is a list of entries by write, oldest first.
type entryList struct{ head, tail *stateEntry }

func (l *entryList) pushBack(e *stateEntry, i int) {
	e.links[i].prev = l.tail
	if l.tail != nil {
		l.tail.links[i].next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *entryList) unlink(e *stateEntry, i int) {
	lk := &e.links[i]
	if lk.prev != nil {
		lk.prev.links[i].next = lk.next
	} else {
		l.head = lk.next
	}
	if lk.next != nil {
		lk.next.links[i].prev = lk.prev
	} else {
		l.tail = lk.prev
	}
}

// topicState is the state of one topic.
type topicState struct {
	keys map[string]*stateEntry
	list entryList
}

// memState is the memory broker's state of keyed topics. Its owner (the
// broker) holds its lock around every call, the lock appends take, which is
// what makes a snapshot exact at its position.
type memState struct {
	topics   map[string]*topicState
	list     entryList
	bytes    int
	maxKeys  int
	maxBytes int
}

func newMemState(maxKeys, maxBytes int) *memState {
	return &memState{topics: make(map[string]*topicState), maxKeys: maxKeys, maxBytes: maxBytes}
}

// stateSize is what an entry counts against the byte bound: the event's
// retained size, key included (the history may hold the same Message: the
// bound counts it again, an upper estimate), and the entry with its map slot.
func stateSize(m *Message) int { return m.retainedSize() + 128 }

// apply records m, a keyed event, as the latest of its key: data null
// removes the key. An event larger than the byte bound on its own removes
// the key's older value and is not kept.
func (s *memState) apply(m *Message) {
	keep := string(m.Data) != "null" && stateSize(m) <= s.maxBytes
	ts := s.topics[m.Topic]
	var e *stateEntry
	if ts != nil {
		e = ts.keys[m.Key]
	}
	switch {
	case e != nil && keep:
		// The usual write, a new value of a known key: move its entry to
		// the back of both lists, with no allocation.
		ts.list.unlink(e, byTopic)
		s.list.unlink(e, byAll)
		s.bytes -= stateSize(e.m)
		e.links = [2]struct{ prev, next *stateEntry }{}
		e.m = m
	case e != nil:
		s.remove(e)
		return
	case !keep:
		return
	default:
		if ts == nil {
			ts = &topicState{keys: make(map[string]*stateEntry)}
			s.topics[m.Topic] = ts
		}
		e = &stateEntry{m: m, topic: ts}
		ts.keys[m.Key] = e
	}
	ts.list.pushBack(e, byTopic)
	s.list.pushBack(e, byAll)
	s.bytes += stateSize(m)
	if len(ts.keys) > s.maxKeys {
		s.remove(ts.list.head)
	}
	for s.bytes > s.maxBytes {
		s.remove(s.list.head)
	}
}

// remove drops e, and its topic if e was the topic's last key.
func (s *memState) remove(e *stateEntry) {
	ts := e.topic
	ts.list.unlink(e, byTopic)
	s.list.unlink(e, byAll)
	s.bytes -= stateSize(e.m)
	delete(ts.keys, e.m.Key)
	if len(ts.keys) == 0 {
		delete(s.topics, e.m.Topic)
	}
	*e = stateEntry{}
}

// snapshot returns the events of the state of every topic matching any of
// pats, and how many topics they come from. Each topic's events are
// ascending by cursor (the order of writes, since each write takes the next
// position); the caller merges several topics. Literal patterns are looked
// up; only a wildcard walks the topics.
func (s *memState) snapshot(pats []Pattern) ([]*Message, int) {
	var tss []*topicState
	n := 0
	add := func(ts *topicState) {
		tss = append(tss, ts)
		n += len(ts.keys)
	}
	if slices.ContainsFunc(pats, func(p Pattern) bool { return p.wild }) {
		for topic, ts := range s.topics {
			if slices.ContainsFunc(pats, func(p Pattern) bool { return p.Match(topic) }) {
				add(ts)
			}
		}
	} else {
		for i, p := range pats {
			dup := slices.ContainsFunc(pats[:i], func(q Pattern) bool { return q.raw == p.raw })
			if ts := s.topics[p.raw]; ts != nil && !dup {
				add(ts)
			}
		}
	}
	out := make([]*Message, 0, n)
	for _, ts := range tss {
		for e := ts.list.head; e != nil; e = e.links[byTopic].next {
			out = append(out, e.m)
		}
	}
	return out, len(tss)
}
