package redisbroker

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// maybeTrim drops events older than TTL, at most every TTL/4 (and 1 s) per
// node. Stream IDs are sequence numbers, not times, so it finds the first
// young entry by its time field and trims below it; every node may do it,
// and trimming twice is harmless. Failures are left to the next call.
//
// A caller that finds another trimming goes on without waiting: that trim
// serves it as one a moment ago would have, and a request must not queue
// behind another's round trips to a Redis that stopped answering.
func (b *Broker) maybeTrim(ctx context.Context) {
	if b.o.TTL <= 0 {
		return
	}
	if !b.trimMu.TryLock() {
		return
	}
	defer b.trimMu.Unlock()
	now := time.Now()
	if now.Sub(b.lastTrim) < min(b.o.TTL/4, time.Second) {
		return
	}
	b.lastTrim = now
	t, err := b.rdb.Time(ctx).Result()
	if err != nil {
		return
	}
	cutoff := t.Add(-b.o.TTL).UnixMicro()
	for {
		entries, err := b.rdb.XRangeN(ctx, b.logKey, "-", "+", 100).Result()
		if err != nil || len(entries) == 0 {
			return
		}
		keep := ""
		for _, xm := range entries {
			m, _ := xm.Values["m"].(string)
			if micros, err := strconv.ParseInt(m, 10, 64); err == nil && micros >= cutoff {
				keep = xm.ID
				break
			}
		}
		if keep == "" {
			// All 100 are old: drop them and look again.
			last := entries[len(entries)-1].ID
			seqStr, _, _ := strings.Cut(last, "-")
			seq, _ := strconv.ParseUint(seqStr, 10, 64)
			keep = strconv.FormatUint(seq+1, 10) + "-0"
			if err := b.rdb.XTrimMinID(ctx, b.logKey, keep).Err(); err != nil {
				return
			}
			continue
		}
		_ = b.rdb.XTrimMinID(ctx, b.logKey, keep).Err()
		return
	}
}
