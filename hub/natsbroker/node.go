package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
)

// Heartbeats and sweeps. Each node puts its ID in a key-value bucket,
// <Stream>_NODES, whose entries expire after NodeTTL unless refreshed, and
// refreshes it every third of NodeTTL. A node with members registers in
// the presence stream (<Subjects>_pres.r.<NODE>) at every heartbeat. The
// node that holds the sweep lease (sweeplease.go) sweeps, at every
// heartbeat: for each registered node other than
// itself whose heartbeat has expired, it reads the node's markers and
// makes each of those members leave through ChangePresence, which appends
// a leave only for a member (so two sweepers make it leave once), then
// removes the markers, and the registration once none is left. The members
// of a node that died thus leave within about NodeTTL and a third.

// DefaultNodeTTL is the default Options.NodeTTL: with a sweep every third
// of it, the members of a node that died leave within about 20 s.
const DefaultNodeTTL = 15 * time.Second

// sweepBatch bounds the members one sweep step makes leave.
const sweepBatch = 500

func (b *Broker) nodesBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.o.Stream + "_NODES",
		Description: "Herald node heartbeats",
		TTL:         b.o.NodeTTL,
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    b.o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open the heartbeats bucket: %w", b.fail(err))
	}
	return kv, nil
}

// nodeLoop is the node's heartbeat goroutine, from Start to Close. At
// Close the heartbeat is deleted: the hub has made this node's members
// leave by then.
func (b *Broker) nodeLoop() {
	defer b.nodes.Done()
	t := time.NewTicker(b.o.NodeTTL / 3)
	defer t.Stop()
	var kv jetstream.KeyValue
	first, beats := true, 0
	for {
		ctx, cancel := context.WithTimeout(b.ctx, b.o.NodeTTL/3)
		var err error
		if kv == nil {
			kv, err = b.nodesBucket(ctx)
		}
		if kv != nil && !b.paused.Load() {
			if err = b.beat(ctx, kv, first); err == nil {
				first = false
				var lead bool
				if lead, err = b.lead(ctx, kv); err == nil && lead {
					err = b.sweep(ctx, kv)
				}
			}
			if beats++; err == nil && beats%compactEvery == 0 {
				err = b.compact(ctx)
			}
		}
		cancel()
		if err != nil && b.ctx.Err() == nil {
			b.o.Logger.Warn("nats broker: heartbeat or sweep failed", "err", err)
		}
		select {
		case <-t.C:
		case <-b.halt:
			return // a test's simulated crash: no clean-up
		case <-b.ctx.Done():
			if kv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = kv.Purge(ctx, b.node)
				b.resign(ctx, kv)
				cancel()
			}
			return
		}
	}
}

// beat refreshes the heartbeat. Finding it gone after the first means it
// expired: the node could not refresh it for NodeTTL (cut off from NATS,
// or paused), and other nodes may have made its members leave. The
// heartbeat is back before the rejoin is asked for, so no sweep runs
// after it; each member a sweep took comes back with what it joined with
// (see swept).
func (b *Broker) beat(ctx context.Context, kv jetstream.KeyValue, first bool) error {
	expired := false
	if !first {
		_, err := kv.Get(ctx, b.node)
		expired = errors.Is(err, jetstream.ErrKeyNotFound)
	}
	if _, err := kv.Put(ctx, b.node, []byte("1")); err != nil {
		return fmt.Errorf("failed to refresh the heartbeat: %w", b.fail(err))
	}
	if expired {
		b.o.Logger.Warn("nats broker: this node's heartbeat had expired; other nodes may have made its members leave: joining them again",
			"node", b.node, "ttl", b.o.NodeTTL)
		if b.revive != nil {
			b.revive()
		}
	}
	if b.hasMembers.Load() {
		if _, err := b.js.Publish(ctx, b.presNodeSubject(b.node), nil); err != nil {
			return fmt.Errorf("failed to register the node: %w", b.fail(err))
		}
	}
	return nil
}

// OnRevive implements hub.NodeReviver: f is called, from the heartbeat
// goroutine, when the node finds its heartbeat expired although it is
// alive. Call it before Start.
func (b *Broker) OnRevive(f func()) { b.revive = f }

// sweep makes the members of every registered node whose heartbeat
// expired leave.
func (b *Broker) sweep(ctx context.Context, kv jetstream.KeyValue) error {
	s, err := b.presStream(ctx, false)
	if err != nil || s == nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(b.presPrefix()+"r.*"))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		b.dropPresStream()
		return nil
	}
	if err != nil {
		return b.fail(err)
	}
	for subj := range info.State.Subjects {
		node := strings.TrimPrefix(subj, b.presPrefix()+"r.")
		if node == b.node {
			continue
		}
		if _, err := kv.Get(ctx, node); err == nil || !errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // alive, or unknown: not now
		}
		if err := b.sweepNode(ctx, s, node); err != nil {
			return err
		}
	}
	return nil
}

// sweepNode makes the members of a dead node leave, sweepBatch at a time.
func (b *Broker) sweepNode(ctx context.Context, s jetstream.Stream, node string) error {
	left := 0
	for ctx.Err() == nil {
		r, err := b.openReaderOn(ctx, s, b.presName(), b.presPrefix()+"n."+node+".>", 1)
		if err != nil {
			return err
		}
		page, err := r.fetch(ctx, sweepBatch)
		r.close()
		if err != nil {
			return err
		}
		if len(page) == 0 {
			if left > 0 {
				b.o.Logger.Info("nats broker: members of a dead node left", "node", node, "members", left)
			}
			return b.purgeSubject(ctx, b.presNodeSubject(node), 0)
		}
		changes := make([]hub.PresenceChange, 0, len(page))
		for _, rm := range page {
			client, topic, ok := strings.Cut(string(rm.data), "\n")
			if ok {
				changes = append(changes, hub.PresenceChange{Topic: topic, Client: client})
			}
		}
		msgs, err := b.changePresence(ctx, changes, node)
		if err != nil {
			return err
		}
		left += len(msgs)
		for _, m := range msgs {
			// Kept for a while: a node taken for dead while alive joins
			// its members again with what they joined with (a rejoin).
			rec := &nats.Msg{Subject: b.presSweptSubject(node, m.Topic, m.Key), Data: m.Data, Header: nats.Header{
				hdrEpoch: []string{m.ID.Epoch},
				hdrTime:  []string{strconv.FormatInt(time.Now().UnixMicro(), 10)},
			}}
			if _, err := b.js.PublishMsg(ctx, rec); err != nil {
				return fmt.Errorf("failed to keep a swept member: %w", b.fail(err))
			}
		}
		for _, rm := range page {
			if err := b.purgeSubject(ctx, rm.subject, rm.seq); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// Compaction: the presence stream keeps a tombstone for every leave (so
// that an applier lagging behind does not write the join back) and a
// record of every member a sweep made leave, and the state stream a
// tombstone for every removal (for the same reason). Every compactEvery
// heartbeats each node scans up to compactScan messages of each stream,
// from where it stopped, and removes the tombstones whose leave or removal
// is out of the log's retention (no applier reads the older event again;
// one that read it before does not write it once it is that old, see
// applier.olderThanFloor) and older than compactAge, the swept records
// older than sweptTTL, and everything of an older epoch.
const (
	compactEvery = 12
	compactScan  = 50000
	compactAge   = time.Minute
	sweptTTL     = time.Hour
)

func (b *Broker) compact(ctx context.Context) error {
	info, err := b.info(ctx)
	if err != nil {
		return err
	}
	epoch, first := epochOf(info), info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = info.State.LastSeq + 1
	}
	now, age := time.Now(), time.Duration(b.compactAge.Load())
	tombstone := func(rm rawMsg) bool {
		micros, _ := strconv.ParseInt(rm.header.Get(hdrTime), 10, 64)
		seq, _ := strconv.ParseUint(rm.header.Get(hdrSeq), 10, 64)
		return string(rm.data) == "null" && seq < first && now.Sub(time.UnixMicro(micros)) > age
	}
	if s, err := b.presStream(ctx, false); err != nil {
		return err
	} else if s != nil {
		err := b.compactStream(ctx, s, b.presName(), &b.compactFrom, func(rm rawMsg) bool {
			kind, _, _ := strings.Cut(strings.TrimPrefix(rm.subject, b.presPrefix()), ".")
			switch {
			case kind != "m" && kind != "s":
				return false
			case rm.header.Get(hdrEpoch) != epoch:
				return true
			case kind == "m":
				return tombstone(rm)
			}
			micros, _ := strconv.ParseInt(rm.header.Get(hdrTime), 10, 64)
			return now.Sub(time.UnixMicro(micros)) > sweptTTL
		})
		if err != nil {
			return err
		}
	}
	s, err := b.stateStream(ctx, false)
	if err != nil || s == nil {
		return err
	}
	return b.compactStream(ctx, s, b.stateName(), &b.stateCompactFrom, func(rm rawMsg) bool {
		return rm.header.Get(hdrEpoch) != epoch || tombstone(rm)
	})
}

// compactStream scans up to compactScan messages of stream s from *from
// on and removes those stale reports, each by a purge of its subject up to
// it, so that a message written again meanwhile stays. *from is where the
// next scan starts.
func (b *Broker) compactStream(ctx context.Context, s jetstream.Stream, name string, from *atomic.Uint64, stale func(rawMsg) bool) error {
	r, err := b.openReaderOn(ctx, s, name, "", max(from.Load(), 1))
	if err != nil {
		return err
	}
	defer r.close()
	for scanned := 0; !r.done() && scanned < compactScan; {
		page, err := r.fetch(ctx, 256)
		if err != nil {
			return err
		}
		scanned += len(page)
		for _, rm := range page {
			from.Store(rm.seq + 1)
			if !stale(rm) {
				continue
			}
			opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(rm.subject), jetstream.WithPurgeSequence(rm.seq + 1)}
			if err := s.Purge(ctx, opts...); err != nil {
				return fmt.Errorf("failed to purge %s: %w", rm.subject, b.fail(err))
			}
		}
	}
	if r.done() {
		from.Store(1) // from the start next time
	}
	return nil
}
