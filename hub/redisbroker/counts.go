package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Subscriber counts: each node writes its own to a hash that expires
// unless refreshed, and GET /v1/topics sums the hashes of the live nodes.
// A count is at most countEvery old, and a node that died drops out of the
// sum within countTTL.
const (
	countEvery = 5 * time.Second
	countTTL   = 3 * countEvery
)

// CountSubscribers implements hub.ClusterCounter: from Start on, this
// node's counts are written every countEvery.
func (b *Broker) CountSubscribers(local func() map[string]int) { b.countLocal = local }

func (b *Broker) countsKey(node string) string { return "{" + b.o.Prefix + "}:subs:" + node }

// writeCounts replaces this node's hash with its current counts.
func (b *Broker) writeCounts(ctx context.Context) error {
	key := b.countsKey(b.node)
	counts := b.countLocal()
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(counts) > 0 {
			vals := make([]any, 0, 2*len(counts))
			for pat, n := range counts {
				vals = append(vals, pat, n)
			}
			p.HSet(ctx, key, vals...)
			p.Expire(ctx, key, countTTL)
		}
		return nil
	})
	return err
}

func (b *Broker) count() {
	defer b.counting.Done()
	t := time.NewTicker(countEvery)
	defer t.Stop()
	for {
		_ = b.writeCounts(b.ctx) // a failure shows as a stale count
		select {
		case <-t.C:
		case <-b.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.rdb.Del(ctx, b.countsKey(b.node)) // leave the sum at once
			cancel()
			return
		}
	}
}

// ClusterSubscribers implements hub.ClusterCounter. It refreshes this
// node's counts first, so that they are exact in the sum.
func (b *Broker) ClusterSubscribers(ctx context.Context) (map[string]int, error) {
	if b.countLocal != nil {
		if err := b.writeCounts(ctx); err != nil {
			return nil, fmt.Errorf("failed to write subscriber counts to Redis: %w", b.fail(err))
		}
	}
	sum := map[string]int{}
	iter := b.rdb.Scan(ctx, 0, b.countsKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		vals, err := b.rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read subscriber counts from Redis: %w", b.fail(err))
		}
		for pat, v := range vals {
			n, _ := strconv.Atoi(v)
			sum[pat] += n
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("failed to read subscriber counts from Redis: %w", b.fail(err))
	}
	return sum, nil
}
