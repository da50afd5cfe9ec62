package redisbroker

import (
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// BrokerStats implements hub.BrokerCounter: failed reads of the log, and
// the times reading worked again after failing.
func (b *Broker) BrokerStats() hub.BrokerStats {
	return hub.BrokerStats{Errors: b.readErrors.Load(), Reconnects: b.recoveries.Load()}
}

// read is the reader goroutine: XREAD from the last delivered ID, deliver,
// repeat, until Close. Connection errors are retried with a capped backoff;
// a reconnect resumes from the last ID, so nothing is skipped.
//
// If Redis lost the log (a restart without persistence), new events start
// again at 1 under a new epoch, and XREAD from the old last ID would skip
// or wait for them. So the reader checks the epoch after every failure and
// whenever it is idle, and starts over at 1 when it changed; clients whose
// cursors are of the old epoch then get a reset.
func (b *Broker) read(deliver func([]*hub.Message), last uint64) {
	defer close(b.done)
	epoch := b.currentEpoch()
	backoff := 50 * time.Millisecond
	recheck, failing := false, false
	for b.ctx.Err() == nil {
		if recheck {
			e, err := b.loadEpoch(b.ctx)
			if err != nil {
				// As much a failed read of the log as a failed XREAD: it
				// counts, and so does the recovery after it.
				if b.ctx.Err() == nil && !failing {
					b.unreachable(err)
					b.o.Logger.Warn("redis broker: reading the log's epoch failed; retrying", "err", err, "in", backoff)
					b.readErrors.Add(1)
					failing = true
				}
				if !b.sleep(&backoff) {
					return
				}
				continue
			}
			recheck = false
			if e != epoch {
				b.o.Logger.Warn("redis broker: the log was lost and started afresh (new epoch); clients resume with a reset",
					"epoch", e)
				epoch, last = e, 0
			}
		}
		res, err := b.rdb.XRead(b.ctx, &redis.XReadArgs{
			Streams: []string{b.logKey, strconv.FormatUint(last, 10) + "-0"},
			Count:   512,
			Block:   b.o.Block,
		}).Result()
		if failing && (err == nil || errors.Is(err, redis.Nil)) {
			failing = false
			b.recoveries.Add(1)
			b.o.Logger.Info("redis broker: reading the log again")
		}
		switch {
		case b.ctx.Err() != nil:
			return
		case errors.Is(err, redis.Nil):
			recheck = true // idle: a good moment to look
			continue
		case err != nil:
			b.unreachable(err) // publishes check before they send
			b.o.Logger.Warn("redis broker: reading the log failed; retrying", "err", err, "in", backoff)
			b.readErrors.Add(1)
			recheck, failing = true, true
			if !b.sleep(&backoff) {
				return
			}
			continue
		}
		backoff = 50 * time.Millisecond
		for _, st := range res {
			msgs := make([]*hub.Message, 0, len(st.Messages))
			for _, xm := range st.Messages {
				m, err := b.message(xm, epoch)
				if err != nil {
					b.o.Logger.Error("redis broker: skipping an unreadable log entry", "id", xm.ID, "err", err)
					continue
				}
				if m.ID.Seq != last+1 && last != 0 {
					// The entries in between were trimmed before this node
					// read them: it fell more than the retention behind.
					b.o.Logger.Error("redis broker: events were trimmed before this node delivered them",
						"from", last+1, "to", m.ID.Seq-1)
					if b.skipped != nil {
						b.skipped(m.ID.Seq)
					}
				}
				last = m.ID.Seq
				msgs = append(msgs, m)
			}
			if len(msgs) > 0 && b.ctx.Err() == nil {
				deliver(msgs)
			}
		}
	}
}

// sleep waits out the backoff, doubling it up to 2 s; false if the broker
// closed meanwhile.
func (b *Broker) sleep(backoff *time.Duration) bool {
	select {
	case <-time.After(*backoff):
	case <-b.ctx.Done():
		return false
	}
	*backoff = min(2**backoff, 2*time.Second)
	return true
}
