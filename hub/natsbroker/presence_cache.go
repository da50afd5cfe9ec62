package natsbroker

import (
	"context"

	"github.com/heraldpush/herald/hub"
	"sync"
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
		c.epoch, c.topics, c.size = epoch, nil, 0
	}
	c.pos = resolved
	if len(c.topics) == 0 {
		return
	}
	for _, m := range out {
		if !m.IsPresence() {
			continue
		}
		t := c.topics[m.Topic]
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
		}
	}
}

// get returns a copy of a kept topic's members and the position they are
// exact at; ok false if the topic is not kept.
func (c *presCache) get(topic string) (members map[string]member, at hub.Cursor, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.topics[topic]
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
	if at.Epoch != c.epoch || c.topics[topic] != nil {
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
	for c.size > presCacheMembers && len(c.topics) > 1 {
		var oldest string
		for name, t := range c.topics {
			if name != topic && (oldest == "" || t.used < c.topics[oldest].used) {
				oldest = name
			}
		}
		c.size -= len(c.topics[oldest].members)
		delete(c.topics, oldest)
	}
	return true, 0
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
