package outbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table names an outbox table and what goes with it: its dead-letter
// table, its trigger's function and its NOTIFY channel. Names are plain
// identifiers, [A-Za-z_][A-Za-z0-9_]*, with an optional schema.
type Table struct {
	Schema string // "" for the search path's
	Name   string
}

// DefaultTable is the outbox table of a source URL without a table
// parameter.
const DefaultTable = "herald_outbox"

// ParseTable parses "name" or "schema.name".
func ParseTable(s string) (Table, error) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		schema, name = "", s
	} else if !identifier(schema) {
		return Table{}, fmt.Errorf("invalid outbox table %q: the schema must be [A-Za-z_][A-Za-z0-9_]*, at most 63 bytes", s)
	}
	if !identifier(name) {
		return Table{}, fmt.Errorf("invalid outbox table %q: the name must be [A-Za-z_][A-Za-z0-9_]*, at most 58 bytes", s)
	}
	if len(name) > 58 { // leaves room for "_dead" and "_notify" within 63
		return Table{}, fmt.Errorf("invalid outbox table %q: the name must be at most 58 bytes", s)
	}
	return Table{Schema: schema, Name: name}, nil
}

func identifier(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// String returns the table as written in a source URL.
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

func (t Table) ident(name string) string {
	if t.Schema == "" {
		return pgx.Identifier{name}.Sanitize()
	}
	return pgx.Identifier{t.Schema, name}.Sanitize()
}

// outbox, dead and notify are the quoted names of the table, its
// dead-letter table and its trigger function.
func (t Table) outbox() string { return t.ident(t.Name) }
func (t Table) dead() string   { return t.ident(t.Name + "_dead") }
func (t Table) notify() string { return t.ident(t.Name + "_notify") }

// Channel is the NOTIFY channel of the table's trigger.
func (t Table) Channel() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "_" + t.Name
}

// SQL returns the statements that create the outbox table, its dead-letter
// table and the trigger that wakes consumers, idempotently: running them on
// a database that has them changes nothing but the trigger's function. It
// is what "herald outbox init" runs, and what docs/outbox.md shows.
func (t Table) SQL() string {
	ch := strings.ReplaceAll(t.Channel(), "'", "''")
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
  id         bigserial PRIMARY KEY,
  topic      text NOT NULL,
  type       text NOT NULL DEFAULT 'message',
  key        text,
  data       jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS %[2]s (
  id         bigint PRIMARY KEY,
  topic      text,
  type       text,
  key        text,
  data       jsonb,
  created_at timestamptz,
  failed_at  timestamptz NOT NULL DEFAULT now(),
  reason     text NOT NULL
);
CREATE OR REPLACE FUNCTION %[3]s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('%[4]s', '');
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS herald_notify ON %[1]s;
CREATE TRIGGER herald_notify AFTER INSERT ON %[1]s
  FOR EACH STATEMENT EXECUTE FUNCTION %[3]s();
`, t.outbox(), t.dead(), t.notify(), ch)
}

// Init creates the outbox table, its dead-letter table and its trigger in
// the database at url (a postgres:// URL; a table parameter is ignored), in
// one transaction.
func Init(ctx context.Context, url string, t Table) error {
	cfg, _, err := parseURL(url)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("failed to connect to PostgreSQL: %w", err)
	}
	defer closeConn(conn)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("failed to create the outbox %s: %w", t, err)
	}
	defer rollback(ctx, tx)
	// Two inits at once would race on the trigger: take a lock for it.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(t, "init")); err != nil {
		return fmt.Errorf("failed to create the outbox %s: %w", t, err)
	}
	if _, err := tx.Exec(ctx, t.SQL()); err != nil {
		return fmt.Errorf("failed to create the outbox %s: %w", t, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("failed to create the outbox %s: %w", t, err)
	}
	return nil
}
