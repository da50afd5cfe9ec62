package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// Read implements hub.Broker.
func (b *Broker) Read(ctx context.Context, req hub.ReadRequest) (hub.ReadResult, error) {
	if req.Limit <= 0 {
		return hub.ReadResult{}, fmt.Errorf("failed to read history: limit %d must be positive", req.Limit)
	}
	if b.closed.Load() {
		return hub.ReadResult{}, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	res := hub.ReadResult{Next: req.After}
	from, scanned := req.After+1, 0
	// lastSeen is the log's end as read after an empty page, 0 before.
	// The publish script numbers and appends in one step, so every event
	// up to it is in the stream unless trimmed; reading it after the
	// page, though, may count an event appended in between.
	var lastSeen uint64
	for {
		page := 256
		if req.MaxScan > 0 {
			page = min(page, req.MaxScan-scanned)
		}
		entries, err := b.rdb.XRangeN(ctx, b.logKey, strconv.FormatUint(from, 10)+"-0", "+", int64(page)).Result()
		if err != nil {
			return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		if len(entries) == 0 {
			if scanned == 0 {
				// Nothing from After on: the end of the log, or all of it
				// was trimmed. Which one is known only from an end read
				// before the page: read it, and look again.
				if lastSeen > req.After {
					return hub.ReadResult{}, hub.ErrHistoryGone
				}
				last, err := b.lastSeq(ctx)
				if err != nil {
					return hub.ReadResult{}, err
				}
				if req.After < last {
					lastSeen = last
					continue
				}
			}
			return res, nil
		}
		for _, xm := range entries {
			m, err := b.message(xm, b.currentEpoch())
			if err != nil {
				return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
			}
			if scanned == 0 && m.ID.Seq != req.After+1 {
				return hub.ReadResult{}, hub.ErrHistoryGone // trimmed up to m
			}
			if len(res.Messages) == req.Limit || (req.MaxScan > 0 && scanned == req.MaxScan) {
				res.More = true
				return res, nil
			}
			scanned++
			res.Next = m.ID.Seq
			for _, p := range req.Patterns {
				if p.Match(m.Topic) {
					res.Messages = append(res.Messages, m)
					break
				}
			}
		}
		from = res.Next + 1
		if len(entries) < page {
			return res, nil
		}
		if req.MaxScan > 0 && scanned == req.MaxScan || len(res.Messages) == req.Limit {
			// Whether more follow is known only by looking: one entry.
			more, err := b.rdb.XRangeN(ctx, b.logKey, strconv.FormatUint(from, 10)+"-0", "+", 1).Result()
			if err != nil {
				return hub.ReadResult{}, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
			}
			res.More = len(more) > 0
			return res, nil
		}
	}
}

func (b *Broker) lastSeq(ctx context.Context) (uint64, error) {
	s, err := b.rdb.Get(ctx, b.seqKey).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failed to read the log's end from Redis: %w", b.fail(err))
	}
	return s, nil
}

// Latest implements hub.Broker.
func (b *Broker) Latest(ctx context.Context, topic string, limit int) ([]*hub.Message, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	var out []*hub.Message
	end := "+"
	for len(out) < limit {
		entries, err := b.rdb.XRevRangeN(ctx, b.logKey, end, "-", 256).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		for _, xm := range entries {
			m, err := b.message(xm, b.currentEpoch())
			if err != nil {
				return nil, err
			}
			if m.Topic == topic {
				out = append(out, m)
				if len(out) == limit {
					break
				}
			}
			end = "(" + xm.ID
		}
		if len(entries) < 256 {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Bounds implements hub.Broker.
func (b *Broker) Bounds(ctx context.Context) (hub.Bounds, error) {
	if b.closed.Load() {
		return hub.Bounds{}, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	pipe := b.rdb.Pipeline()
	epoch := pipe.Get(ctx, b.epochKey)
	seq := pipe.Get(ctx, b.seqKey)
	first := pipe.XRangeN(ctx, b.logKey, "-", "+", 1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return hub.Bounds{}, fmt.Errorf("failed to read the log's bounds from Redis: %w", b.fail(err))
	}
	last, err := seq.Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return hub.Bounds{}, fmt.Errorf("failed to read the log's end from Redis: %w", b.fail(err))
	}
	if e, err := epoch.Result(); err == nil {
		b.epoch.Store(&e)
	} else if e, err := b.loadEpoch(ctx); err == nil { // Redis lost it
		b.epoch.Store(&e)
	}
	bd := hub.Bounds{Epoch: b.currentEpoch(), First: last + 1, Last: last}
	if entries := first.Val(); len(entries) > 0 {
		m, err := b.message(entries[0], b.currentEpoch())
		if err != nil {
			return hub.Bounds{}, err
		}
		bd.First = m.ID.Seq
	}
	return bd, nil
}

// Topics implements hub.Broker. It reads the whole retained log: the
// endpoint that asks is for people, and the log is bounded by Size.
func (b *Broker) Topics(ctx context.Context) ([]hub.TopicHistory, error) {
	if b.closed.Load() {
		return nil, hub.ErrClosed
	}
	b.maybeTrim(ctx)
	counts := map[string]int{}
	from := "-"
	for {
		entries, err := b.rdb.XRangeN(ctx, b.logKey, from, "+", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to read history from Redis: %w", b.fail(err))
		}
		for _, xm := range entries {
			t, _ := xm.Values["t"].(string)
			counts[t]++
			from = "(" + xm.ID
		}
		if len(entries) < 1000 {
			break
		}
	}
	out := make([]hub.TopicHistory, 0, len(counts))
	for t, n := range counts {
		out = append(out, hub.TopicHistory{Topic: t, Events: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}
