package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldpush/herald/outbox"
)

// The list lives in PostgreSQL: todo_items holds the to-dos, and
// herald_outbox the events that Herald (herald serve --source) publishes
// to todo.list, written in the same transactions as the to-dos. An
// action's answer is kept in todo_answers by its Idempotency-Key, in the
// same transaction as its change, so that a retry replays it.

// outboxTable is the outbox that herald serve --source
// 'postgres://…?table=herald_outbox' consumes.
var outboxTable = outbox.Table{Name: outbox.DefaultTable}

const schemaSQL = `CREATE TABLE IF NOT EXISTS todo_items (
  id         bigserial PRIMARY KEY,
  title      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS todo_answers (
  key        text PRIMARY KEY,
  status     int NOT NULL,
  body       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);`

// answersTTL is how long an answer is kept for retries: far longer than
// Herald retries an action (--action-ttl, an hour by default).
const answersTTL = "1 day"

// createDatabase creates the database of dbURL on its server, through the
// server's postgres database, unless it exists: a newcomer's first run
// needs no step of its own.
func createDatabase(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("failed to read --db: %w", err)
	}
	name := cfg.Database
	if name == "" || name == "postgres" {
		return nil
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("failed to connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("failed to look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// Another process may have created it meanwhile: duplicate_database,
	// or unique_violation when both got as far as the catalogue.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to create database %s: %w", name, err)
	}
	return nil
}

// setup creates the database if it is missing, the outbox and the tables,
// idempotently; the first time it creates todo_items it adds the seed
// to-dos, with their events, so that a fresh page has something to delete.
func setup(ctx context.Context, dbURL string, pool *pgxpool.Pool, seed ...string) error {
	if err := createDatabase(ctx, dbURL); err != nil {
		return err
	}
	if err := outbox.Init(ctx, dbURL, outboxTable); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Two backends starting at once would both seed.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('todo.setup', 0))"); err != nil {
			return fmt.Errorf("failed to create the tables: %w", err)
		}
		var existed bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('todo_items') IS NOT NULL").Scan(&existed); err != nil {
			return fmt.Errorf("failed to create the tables: %w", err)
		}
		if _, err := tx.Exec(ctx, schemaSQL); err != nil {
			return fmt.Errorf("failed to create the tables: %w", err)
		}
		if existed {
			return nil
		}
		for _, title := range seed {
			if _, err := addTodo(ctx, tx, title); err != nil {
				return err
			}
		}
		return nil
	})
}

// addTodo inserts a to-do and its event.
func addTodo(ctx context.Context, tx pgx.Tx, title string) (todo, error) {
	var t todo
	if err := tx.QueryRow(ctx, "INSERT INTO todo_items (title) VALUES ($1) RETURNING id, title", title).Scan(&t.ID, &t.Title); err != nil {
		return todo{}, fmt.Errorf("failed to add the to-do: %w", err)
	}
	return t, writeEvent(ctx, tx, key(t.ID), &t)
}

// deleteTodo deletes a to-do and writes its key's null; it reports
// whether there was one.
func deleteTodo(ctx context.Context, tx pgx.Tx, id int64) (bool, error) {
	tag, err := tx.Exec(ctx, "DELETE FROM todo_items WHERE id = $1", id)
	if err != nil {
		return false, fmt.Errorf("failed to delete the to-do: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, writeEvent(ctx, tx, key(id), nil)
}

// writeEvent writes the event of one key of todo.list into the outbox:
// the to-do, or nil for NULL data, which Herald publishes as null and
// which removes the key from the topic's state.
func writeEvent(ctx context.Context, tx pgx.Tx, key string, t *todo) error {
	var data *string
	if t != nil {
		b, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("failed to encode the to-do: %w", err)
		}
		s := string(b)
		data = &s
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+outboxTable.String()+" (topic, type, key, data) VALUES ($1, $2, $3, $4::jsonb)",
		topic, eventType, key, data); err != nil {
		return fmt.Errorf("failed to write the event: %w", err)
	}
	return nil
}

// expireAnswers forgets the answers older than answersTTL.
func expireAnswers(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, "DELETE FROM todo_answers WHERE created_at < now() - $1::interval", answersTTL); err != nil {
		return fmt.Errorf("failed to expire answers: %w", err)
	}
	return nil
}
