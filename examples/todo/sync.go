package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultOutboxLag is how long the outbox may hold rows before sync says
// that Herald does not consume it: far longer than Herald takes (it is
// woken by each commit), shorter than a newcomer's patience.
const defaultOutboxLag = 5 * time.Second

// sync makes Herald's copy of the list equal to the table, through the
// outbox: in one transaction it writes the event of each to-do that Herald
// lacks or holds otherwise, and null for each key that Herald holds and
// the table does not. When both agree it writes nothing. Herald's copy
// needs this after a Herald without a shared broker restarted (its state
// went with it) or when it has keys the table never had (a stale shared
// broker); every change in between reaches it by the actions' own events.
//
// While the outbox still holds rows, Herald's copy is behind them: sync
// writes nothing then, and reports an error once the oldest row has
// waited longer than b.outboxLag (Herald is not running with --source).
func (b *backend) sync(ctx context.Context) (changed int, err error) {
	have, err := b.api.Load().state(ctx)
	if err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, b.db, func(tx pgx.Tx) error {
		// Actions wait until this commits: the events written here are
		// the table as it is, and a later change's event comes after them
		// in the outbox, so that it is the one that stays.
		if _, err := tx.Exec(ctx, "LOCK TABLE todo_items IN SHARE MODE"); err != nil {
			return fmt.Errorf("failed to lock the list: %w", err)
		}
		var waiting int
		var oldest *float64 // seconds
		if err := tx.QueryRow(ctx, "SELECT count(*), extract(epoch FROM max(now() - created_at))::float8 FROM (SELECT created_at FROM "+
			outboxTable.String()+" LIMIT 1000) AS w").Scan(&waiting, &oldest); err != nil {
			return fmt.Errorf("failed to read the outbox: %w", err)
		}
		if waiting > 0 {
			if age := time.Duration(*oldest * float64(time.Second)); age > b.outboxLag {
				return fmt.Errorf("%d events have waited in the outbox %s for %v: is Herald running with --source 'postgres://…?table=%s'?",
					waiting, outboxTable, age.Round(time.Second), outboxTable)
			}
			return nil
		}
		rows, err := tx.Query(ctx, "SELECT id, title FROM todo_items ORDER BY id")
		if err != nil {
			return fmt.Errorf("failed to read the list: %w", err)
		}
		todos, err := pgx.CollectRows(rows, pgx.RowToStructByPos[todo])
		if err != nil {
			return fmt.Errorf("failed to read the list: %w", err)
		}
		for _, want := range todos {
			var got todo
			if data, ok := have[key(want.ID)]; !ok || json.Unmarshal(data, &got) != nil || got != want {
				if err := writeEvent(ctx, tx, key(want.ID), &want); err != nil {
					return err
				}
				changed++
			}
			delete(have, key(want.ID))
		}
		for k := range have {
			if err := writeEvent(ctx, tx, k, nil); err != nil {
				return err
			}
			changed++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return changed, nil
}

// keepInSync runs sync at once and then every period until ctx ends, and
// forgets old answers. It logs when the sync fails, once until it works
// again, and how many events it wrote: right after Herald starts, the
// whole list.
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
				b.log.Info("Herald's copy of the list is coming up to date", "events", n)
			}
			failing = false
		}
		if err := expireAnswers(ctx, b.db); err != nil && ctx.Err() == nil {
			b.log.Warn("failed to expire answers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
