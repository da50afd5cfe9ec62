package main

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// sync makes Herald's copy of the list equal to the backend's list: it
// publishes each to-do that Herald lacks or holds otherwise, and null for
// each key that Herald holds and the list does not. When both agree it
// publishes nothing. It holds b.mu throughout, so no action changes the
// list while the two are compared.
func (b *backend) sync(ctx context.Context) (changed int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	api := b.api.Load()
	have, err := api.state(ctx)
	if err != nil {
		return 0, err
	}
	for _, id := range slices.Sorted(maps.Keys(b.todos)) {
		want := todo{ID: id, Title: b.todos[id]}
		var got todo
		if data, ok := have[key(id)]; !ok || json.Unmarshal(data, &got) != nil || got != want {
			if err := api.put(ctx, want); err != nil {
				return changed, err
			}
			changed++
		}
		delete(have, key(id))
	}
	for k := range have {
		if err := api.publish(ctx, k, nil); err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}

// keepInSync runs sync at once and then every period until ctx ends. It
// logs when Herald cannot be reached, once until it can again, and what it
// had to publish: right after Herald starts, the whole list.
func (b *backend) keepInSync(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		n, err := b.sync(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			b.log.Warn("failed to bring Herald's copy of the list up to date; trying again", "every", every, "err", err)
			failing = true
		case err == nil:
			if failing || n > 0 {
				b.log.Info("Herald's copy of the list is up to date", "published", n)
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
