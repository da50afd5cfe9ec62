package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subscriber counts: each node puts its own under its node ID in a
// key-value bucket (<Stream>_SUBS) whose entries expire unless refreshed,
// and GET /v1/topics sums the entries of the live nodes. A count is at most
// countEvery old, and a node that died drops out of the sum within countTTL.
const (
	countEvery = 5 * time.Second
	countTTL   = 3 * countEvery
)

// CountSubscribers implements hub.ClusterCounter: from Start on, this
// node's counts are written every countEvery.
func (b *Broker) CountSubscribers(local func() map[string]int) { b.countLocal = local }

func (b *Broker) countsBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.o.Stream + "_SUBS",
		Description: "Herald subscriber counts per node",
		TTL:         countTTL,
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    b.o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open the subscriber counts bucket: %w", err)
	}
	return kv, nil
}

func (b *Broker) writeCounts(ctx context.Context, kv jetstream.KeyValue) error {
	v, err := json.Marshal(b.countLocal())
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, b.node, v)
	return err
}

func (b *Broker) count() {
	defer b.counting.Done()
	t := time.NewTicker(countEvery)
	defer t.Stop()
	var kv jetstream.KeyValue
	for {
		// A failure shows as a stale count, and the next round retries.
		ctx, cancel := context.WithTimeout(b.ctx, countEvery)
		if kv == nil {
			kv, _ = b.countsBucket(ctx)
		}
		if kv != nil {
			_ = b.writeCounts(ctx, kv)
		}
		cancel()
		select {
		case <-t.C:
		case <-b.ctx.Done():
			if kv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = kv.Purge(ctx, b.node) // leave the sum at once
				cancel()
			}
			return
		}
	}
}

// ClusterSubscribers implements hub.ClusterCounter. It refreshes this
// node's counts first, so that they are exact in the sum.
func (b *Broker) ClusterSubscribers(ctx context.Context) (map[string]int, error) {
	kv, err := b.countsBucket(ctx)
	if err != nil {
		return nil, err
	}
	if b.countLocal != nil {
		if err := b.writeCounts(ctx, kv); err != nil {
			return nil, fmt.Errorf("failed to write subscriber counts to NATS: %w", b.fail(err))
		}
	}
	sum := map[string]int{}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return sum, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read subscriber counts from NATS: %w", b.fail(err))
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or left meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read subscriber counts from NATS: %w", b.fail(err))
		}
		var counts map[string]int
		if json.Unmarshal(e.Value(), &counts) != nil {
			continue
		}
		for pat, n := range counts {
			sum[pat] += n
		}
	}
	return sum, nil
}
