package natsbroker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Reading one topic's members from the presence stream costs a filtered
// consumer (25–30 ms to open on NATS 2.9) and a delivery per member, so a
// node loads every topic's members once, when it starts, into its kept
// members (presence_cache.go), and follows them from delivery after. The
// load is the presence snapshot (presenceAt) for all topics at once: the
// presence stream's members, then the log's joins and leaves after the
// applier's position up to the log's end, exact at that end. It waits for
// the applier to reach the log's end at start, so that the log's part is
// short. Past presCacheMembers members it gives up: topics are then kept
// as they are asked about, as before.

// preloadWait bounds how long the load waits for the applier and reads.
const preloadWait = time.Minute

// errTooManyMembers ends a load past the bound.
var errTooManyMembers = errors.New("more members than are kept")

// preloadPresence is the load's goroutine, started by Start (owned by
// b.preloading, ended by Close's cancel of b.ctx); startLast is the log's
// end at start.
func (b *Broker) preloadPresence(epoch string, startLast uint64) {
	defer b.preloading.Done()
	ctx, cancel := context.WithTimeout(b.ctx, preloadWait)
	defer cancel()
	for {
		p := b.applied.Load()
		if p != nil && (p.epoch != epoch || p.seq >= startLast) {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	from := b.presCache.record()
	for range 8 {
		p := b.applied.Load()
		at, all, ok, err := b.allPresenceAt(ctx, *p)
		switch {
		case err != nil:
			if !errors.Is(err, errTooManyMembers) && ctx.Err() == nil {
				b.o.Logger.Warn("nats broker: failed to load presence", "err", err)
			}
		case !ok:
			continue
		case at.Epoch == from.Epoch && at.Seq >= from.Seq:
			b.presCache.putAll(all, at)
			return
		}
		break
	}
	b.presCache.putAll(nil, hub.Cursor{}) // ends the recording
}

// allPresenceAt is presenceAt for every topic: the members by topic and
// client, exact at the position it returns.
func (b *Broker) allPresenceAt(ctx context.Context, p applied) (hub.Cursor, map[string]map[string]member, bool, error) {
	bd, err := b.Bounds(ctx)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch || p.seq+1 < bd.First {
		return hub.Cursor{}, nil, false, nil
	}
	all, gone, err := b.readAllMembers(ctx, p)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd, err = b.Bounds(ctx); err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch {
		return hub.Cursor{}, nil, false, nil
	}
	for _, ms := range all {
		for _, m := range ms {
			if m.seq > bd.Last {
				return hub.Cursor{}, nil, false, nil
			}
		}
	}
	for _, seq := range gone {
		if seq > bd.Last {
			return hub.Cursor{}, nil, false, nil
		}
	}
	size := 0
	for _, ms := range all {
		size += len(ms)
	}
	pats := []hub.Pattern{hub.MustPattern(">")}
	after := p.seq
	for after < bd.Last {
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: pats, Limit: 256})
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
			k := m.Topic + "\n" + m.Key
			ms := all[m.Topic]
			old, isMember := ms[m.Key]
			switch {
			case isMember && old.seq >= m.ID.Seq, gone[k] >= m.ID.Seq:
				// the presence stream has it, or a later one
			case m.Type == hub.TypeJoin:
				if ms == nil {
					ms = map[string]member{}
					all[m.Topic] = ms
				}
				if !isMember {
					size++
				}
				ms[m.Key] = member{seq: m.ID.Seq, data: m.Data}
			case isMember:
				delete(ms, m.Key)
				size--
			}
		}
		if size > b.presCache.bound() {
			return hub.Cursor{}, nil, false, errTooManyMembers
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
	return hub.Cursor{Epoch: bd.Epoch, Seq: bd.Last}, all, true, nil
}

// readAllMembers reads the presence stream's members of every topic, of
// p's epoch, and the positions of its tombstones after p by topic and
// client (those at or before p are older than any event the log's part of
// the snapshot reads, so they need not be kept). Past the bound it stops
// with errTooManyMembers.
func (b *Broker) readAllMembers(ctx context.Context, p applied) (map[string]map[string]member, map[string]uint64, error) {
	all := map[string]map[string]member{}
	gone := map[string]uint64{}
	s, err := b.presStream(ctx, false)
	if err != nil || s == nil {
		return all, gone, err
	}
	prefix := b.presPrefix() + "m."
	r, err := b.openReaderOn(ctx, s, b.presName(), prefix+">", 1)
	if err != nil {
		return nil, nil, err
	}
	defer r.close()
	size, limit := 0, b.presCache.bound()
	for !r.done() {
		page, err := r.fetch(ctx, 4096)
		if err != nil {
			return nil, nil, err
		}
		for _, rm := range page {
			if rm.header.Get(hdrEpoch) != p.epoch {
				continue
			}
			seq, err := strconv.ParseUint(rm.header.Get(hdrSeq), 10, 64)
			client := rm.header.Get(hdrKey)
			// <prefix>m.<CLIENT>.<TOPIC>, the client without dots
			_, topic, _ := strings.Cut(strings.TrimPrefix(rm.subject, prefix), ".")
			if err != nil || client == "" || topic == "" {
				b.o.Logger.Warn("nats broker: skipping an unreadable member", "subject", rm.subject)
				continue
			}
			if string(rm.data) == "null" {
				if seq > p.seq {
					gone[topic+"\n"+client] = seq
					if len(gone) > limit {
						return nil, nil, errTooManyMembers
					}
				}
				continue
			}
			ms := all[topic]
			if ms == nil {
				ms = map[string]member{}
				all[topic] = ms
			}
			if _, ok := ms[client]; !ok {
				size++
			}
			ms[client] = member{seq: seq, data: rm.data}
			if size > limit {
				return nil, nil, errTooManyMembers
			}
		}
	}
	return all, gone, nil
}
