package natsbroker

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/heraldpush/herald/hub"
)

// Reading a topic's 10,000 members from the presence stream takes about
// 100 ms on NATS 2.9 (a filtered consumer and one delivery per member), so
// each node keeps the members of the topics it was last asked about,
// folded from delivery: delivery hands every event once, in order, so a
// topic's members kept from a snapshot exact at position L, with every
// join and leave after L that delivery hands, are exact at delivery's
// position (or at L while delivery is still before it). A topic is loaded
// by one read of the stream; what is kept is bounded by presCacheMembers
// members, the topics least recently asked about going first.
//
// Each node also loads every topic's members once when it starts
// (presence_preload.go), if there are at most presCacheMembers: the cache
// is then complete, a topic it does not hold has no members, and a
// topic's first snapshot is read from memory too. Joins that delivery
// hands for topics not held are then kept as well. Past the bound it is
// no longer complete: the topics least recently asked about go, and a
// topic not held is read from the stream as before.
const presCacheMembers = 100000

// presCache is owned by the broker; its lock is taken by delivery (advance)
// and by readers, and held only for map work, never for NATS.
type presCache struct {
	mu     sync.Mutex
	epoch  string
	pos    uint64 // delivery's position: every event up to it was folded
	topics map[string]*cachedTopic
	size   int    // members kept
	tick   uint64 // for least recently used
	max    int    // bound of size; presCacheMembers if 0
	// complete: every topic with members is in topics, each exact from
	// floor on (events at or before floor are in it already).
	complete bool
	floor    uint64
	// While the load reads (recording), delivery's joins and leaves are
	// kept in pending, so that the load need not catch up with delivery;
	// nil past the bound (the load then gives up).
	recording bool
	pending   []*hub.Message
}

func (c *presCache) bound() int {
	if c.max > 0 {
		return c.max
	}
	return presCacheMembers
}

type cachedTopic struct {
	members map[string]member
	floor   uint64 // the snapshot's position: events at or before it are in members already
	used    uint64
}

// advance folds what delivery handed, up to resolved, into the kept topics.
func (c *presCache) advance(out []*hub.Message, epoch string, resolved uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		c.epoch, c.topics, c.size, c.complete = epoch, nil, 0, false
		c.pending = nil // a load of the old epoch is not kept
	}
	c.pos = resolved
	if len(c.topics) == 0 && !c.complete && !c.recording {
		return
	}
	for _, m := range out {
		if !m.IsPresence() {
			continue
		}
		if c.recording && c.pending != nil {
			if len(c.pending) < c.bound() {
				c.pending = append(c.pending, m)
			} else {
				c.pending = nil
			}
		}
		t := c.topics[m.Topic]
		if t == nil && c.complete && m.Type == hub.TypeJoin && m.ID.Seq > c.floor {
			c.tick++
			t = &cachedTopic{members: map[string]member{}, floor: c.floor, used: c.tick}
			c.topics[m.Topic] = t
		}
		if t == nil || m.ID.Seq <= t.floor {
			continue
		}
		if m.Type == hub.TypeJoin {
			if _, ok := t.members[m.Key]; !ok {
				c.size++
			}
			t.members[m.Key] = member{seq: m.ID.Seq, data: m.Data}
		} else if _, ok := t.members[m.Key]; ok {
			delete(t.members, m.Key)
			c.size--
			if c.complete && len(t.members) == 0 {
				delete(c.topics, m.Topic) // not held: no members
			}
		}
	}
	if c.size > c.bound() {
		// A tenth more is evicted, so that delivery does not evict on
		// every join at the bound.
		c.complete = false
		c.evict("", c.bound()-c.bound()/10)
	}
}

// evict removes the topics least recently asked about, but keep, until
// the members kept are at most target or keep is the only topic left.
// One sort per call, so that a cache of many small topics is not scanned
// once per topic removed.
func (c *presCache) evict(keep string, target int) {
	if c.size <= target {
		return
	}
	names := make([]string, 0, len(c.topics))
	for name := range c.topics {
		if name != keep {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(x, y string) int { return cmp.Compare(c.topics[x].used, c.topics[y].used) })
	for _, name := range names {
		if c.size <= target {
			return
		}
		c.size -= len(c.topics[name].members)
		delete(c.topics, name)
	}
}

// get returns a copy of a kept topic's members and the position they are
// exact at; ok false if the topic is not kept.
func (c *presCache) get(topic string) (members map[string]member, at hub.Cursor, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.topics[topic]
	if t == nil && c.complete {
		return map[string]member{}, hub.Cursor{Epoch: c.epoch, Seq: max(c.floor, c.pos)}, true
	}
	if t == nil {
		return nil, hub.Cursor{}, false
	}
	c.tick++
	t.used = c.tick
	ms := make(map[string]member, len(t.members))
	for k, v := range t.members {
		ms[k] = v
	}
	return ms, hub.Cursor{Epoch: c.epoch, Seq: max(t.floor, c.pos)}, true
}

// position returns delivery's position.
func (c *presCache) position() hub.Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return hub.Cursor{Epoch: c.epoch, Seq: c.pos}
}

// put keeps a topic's members, exact at position at, if delivery is not
// past it (else the caller adds what delivery handed since, and tries
// again). It reports whether it kept them, or need not (another epoch).
func (c *presCache) put(topic string, ms map[string]member, at hub.Cursor) (done bool, pos uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at.Epoch != c.epoch || c.topics[topic] != nil || c.complete {
		return true, 0
	}
	if c.pos > at.Seq {
		return false, c.pos
	}
	if c.topics == nil {
		c.topics = map[string]*cachedTopic{}
	}
	kept := make(map[string]member, len(ms))
	for k, v := range ms {
		kept[k] = v
	}
	c.tick++
	c.topics[topic] = &cachedTopic{members: kept, floor: at.Seq, used: c.tick}
	c.size += len(kept)
	c.evict(topic, c.bound())
	return true, 0
}

// record starts keeping delivery's joins and leaves for putAll, and
// returns delivery's position: a snapshot exact at that position or
// later, with the joins and leaves kept, is exact at delivery's position.
func (c *presCache) record() hub.Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recording, c.pending = true, []*hub.Message{}
	return hub.Cursor{Epoch: c.epoch, Seq: c.pos}
}

// putAll ends the recording and keeps every topic's members, exact at
// position at (at or after record's position; all is the caller's and
// taken over), brought to delivery's position with the joins and leaves
// recorded, as complete; not if the epoch changed or the bound was passed.
// It reports whether it kept them.
func (c *presCache) putAll(all map[string]map[string]member, at hub.Cursor) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := c.pending
	c.recording, c.pending = false, nil
	if at.Epoch != c.epoch || pending == nil {
		return false
	}
	for _, m := range pending {
		if m.ID.Seq <= at.Seq {
			continue // in the snapshot already
		}
		if m.Type == hub.TypeJoin {
			if all[m.Topic] == nil {
				all[m.Topic] = map[string]member{}
			}
			all[m.Topic][m.Key] = member{seq: m.ID.Seq, data: m.Data}
		} else {
			delete(all[m.Topic], m.Key)
		}
	}
	size := 0
	for _, ms := range all {
		size += len(ms)
	}
	if size > c.bound() {
		return false
	}
	// Topics kept meanwhile are replaced: these are exact at floor, and
	// delivery folds what it hands after floor into them.
	floor := max(at.Seq, c.pos)
	c.tick++
	c.topics = make(map[string]*cachedTopic, len(all))
	for topic, ms := range all {
		if len(ms) > 0 {
			c.topics[topic] = &cachedTopic{members: ms, floor: floor, used: c.tick}
		}
	}
	c.size, c.complete, c.floor = size, true, floor
	return true
}

// members returns a topic's members exact at the position it returns:
// kept ones, or read from the presence stream (and then kept).
func (b *Broker) members(ctx context.Context, topic string) (hub.Cursor, map[string]member, error) {
	if ms, at, ok := b.presCache.get(topic); ok {
		return at, ms, nil
	}
	at, ms, err := b.presenceSnapshot(ctx, topic)
	if err != nil {
		return hub.Cursor{}, nil, err
	}
	for range 8 {
		done, pos := b.presCache.put(topic, ms, at)
		if done {
			break
		}
		// Delivery has passed the snapshot: add what it handed since.
		if err := b.addTail(ctx, topic, at, pos, ms); err != nil {
			return hub.Cursor{}, nil, err
		}
		at.Seq = pos
	}
	return at, ms, nil
}
