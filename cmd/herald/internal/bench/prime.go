package bench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// primeBatch is how many events one priming request carries.
const primeBatch = 20

// prime publishes events 1…Keys of every topic, one per key (whose
// latencies observe leaves out: they are sent as fast as the server takes
// them, not at the run's rate), then waits until every subscriber has
// received its topic's, at most Drain. It returns the count published per
// topic. A request the server refuses fails the run: a key left
// unprimed would skew what priming is for.
func (r *run) prime(ctx context.Context) (map[int]int64, error) {
	cfg := r.cfg
	r.phase.Store("prime")
	defer r.phase.Store("")
	base := cfg.URL
	if cfg.PublishURL != "" {
		base = cfg.PublishURL
	}
	ep, _ := newEndpoint(base, "/v1/publish", cfg.TLS, nil) // checked by Config.defaults
	pool := &posterPool{e: ep}
	defer pool.closeAll()
	pad := strings.Repeat("x", cfg.Payload)
	primed := map[int]int64{}
	var body, data []byte
	for t := range cfg.Topics {
		for first := int64(1); first <= int64(cfg.Keys); first += primeBatch {
			body = append(body[:0], `{"events":[`...)
			for seq := first; seq < first+primeBatch && seq <= int64(cfg.Keys); seq++ {
				if seq > first {
					body = append(body, ',')
				}
				data = r.appendData(data[:0], t, seq, time.Now().UnixNano(), pad)
				if r.pubLogs != nil {
					r.pubLogs[t].set(seq, dataHash(r.hashSeed, data))
				}
				body = fmt.Appendf(body, `{"topic":"%s.%d","type":"bench","key":"k%d","data":`, cfg.Prefix, t, seq%int64(cfg.Keys))
				body = append(body, data...)
				body = append(body, '}')
			}
			body = append(body, "]}"...)
			if err := pool.postWant(ctx, body, http.StatusOK); err != nil {
				return nil, fmt.Errorf("failed to prime topic %s.%d: %w", cfg.Prefix, t, err)
			}
		}
		primed[t] = int64(cfg.Keys)
	}
	deadline := time.Now().Add(cfg.Drain)
	for !r.complete(primed) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("failed to prime: not every subscriber had its topic's %d keys after %v", cfg.Keys, cfg.Drain)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return primed, nil
}
