package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldpush/herald/hub"
)

// Publisher appends drafts to the log as one batch: Hub.Publish.
type Publisher func(ctx context.Context, drafts ...hub.Draft) ([]*hub.Message, error)

// Options configures a Source.
type Options struct {
	// URL is the source URL: postgres://…?table=NAME&batch=N&poll=D.
	URL     string
	Publish Publisher
	// MaxData bounds a row's data in bytes (as JSON text); a larger row is
	// a dead letter. Default 1 MiB, the HTTP API's default body bound.
	MaxData int
	Logger  *slog.Logger
}

// How long one connection attempt, and one batch (its queries and its
// publish), may take; the broker's own publish gives up within 5 s.
const (
	connectTimeout = 5 * time.Second
	batchTimeout   = 15 * time.Second
	// rollbackTimeout bounds the rollback of a batch that failed, which
	// runs even when the batch's context has ended (a shutdown): a
	// database that stopped answering must not hold the source, and a
	// shutdown waiting for it, for as long as TCP takes to give up.
	// Past it pgx closes the connection, and the database rolls back.
	rollbackTimeout = 2 * time.Second
	maxBackoff      = 5 * time.Second
)

// ApplicationName is the application_name of a source's session, unless
// its URL sets one.
const ApplicationName = "herald-outbox"

// The states of a Source, as Status reports them.
const (
	StateConnecting  = "connecting"  // not connected yet
	StateStandby     = "standby"     // connected; another node consumes the table
	StateConsuming   = "consuming"   // this node consumes the table
	StateUnavailable = "unavailable" // PostgreSQL cannot be reached or refused; retrying
)

// Status is what a Source is doing.
type Status struct {
	State string
	Err   string // why it is unavailable
	Since time.Time
}

// Source consumes one outbox table. Run consumes until its context ends;
// Name, Status, Published and Dead may be called concurrently with it.
type Source struct {
	o      Options
	cfg    *pgx.ConnConfig
	st     Settings
	name   string
	prefix string // of the rows' dedupe keys
	log    *slog.Logger

	published atomic.Uint64
	dead      atomic.Uint64
	mu        sync.Mutex
	status    Status

	// pending holds the ids of rows published whose deletion did not
	// commit (the connection failed): the next session deletes them
	// before anything else, so that they are not published again after
	// the broker's dedupe window. Owned by Run's goroutine.
	pending []int64
}

// New checks the options and returns a Source that has not connected yet.
func New(o Options) (*Source, error) {
	cfg, st, err := parseURL(o.URL)
	if err != nil {
		return nil, err
	}
	if o.Publish == nil {
		return nil, errors.New("failed to create outbox source: no publisher")
	}
	if o.MaxData <= 0 {
		o.MaxData = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Operators (and tests) find the consumer's session by its name.
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = ApplicationName
	}
	db := cfg.Database
	if db == "" {
		db = cfg.User
	}
	s := &Source{
		o: o, cfg: cfg, st: st,
		name:   "postgres:" + st.Table.String(),
		prefix: "ob." + dedupeSafe(db) + "." + st.Table.String() + ":",
		log:    o.Logger.With("source", "postgres:"+st.Table.String()),
		status: Status{State: StateConnecting, Since: time.Now()},
	}
	return s, nil
}

// dedupeSafe maps s into the alphabet of dedupe keys.
func dedupeSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

// Name names the source in logs, metrics and /readyz: "postgres:TABLE".
func (s *Source) Name() string { return s.name }

// Status reports what the source is doing.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Published counts the rows published; Dead the rows moved to the
// dead-letter table.
func (s *Source) Published() uint64 { return s.published.Load() }
func (s *Source) Dead() uint64      { return s.dead.Load() }

func (s *Source) setStatus(state string, err error) {
	s.mu.Lock()
	changed := s.status.State != state
	if changed {
		s.status = Status{State: state, Since: time.Now()}
	}
	if err != nil {
		s.status.Err = err.Error()
	}
	s.mu.Unlock()
	switch {
	case !changed:
	case err != nil:
		s.log.Warn("outbox: PostgreSQL unavailable; rows wait in the table", "err", err)
	default:
		s.log.Info("outbox: " + state)
	}
}

// Run consumes the table until ctx ends, reconnecting with backoff after
// every failure. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		connected, err := s.session(ctx)
		if ctx.Err() != nil {
			break
		}
		s.setStatus(StateUnavailable, err)
		if connected {
			backoff = 100 * time.Millisecond
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

// session connects, waits for the table's lock and consumes until an
// error; connected reports whether it got as far as a connection.
func (s *Source) session(ctx context.Context) (connected bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.cfg.Copy())
	cancel()
	if err != nil {
		return false, fmt.Errorf("failed to connect: %w", err)
	}
	defer closeConn(conn)
	// The lock is the session's: PostgreSQL must notice a dead node soon,
	// which on an idle connection takes TCP keepalives.
	// Every query has a deadline: a database that stopped answering would
	// otherwise hold the source until TCP gave up, minutes later.
	qctx, cancel := context.WithTimeout(ctx, batchTimeout)
	_, err = conn.Exec(qctx, "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3")
	cancel()
	if err != nil {
		return true, fmt.Errorf("failed to set keepalives: %w", err)
	}
	if len(s.pending) > 0 {
		qctx, cancel := context.WithTimeout(ctx, batchTimeout)
		_, err := conn.Exec(qctx, "DELETE FROM "+s.st.Table.outbox()+" WHERE id = ANY($1)", s.pending)
		cancel()
		if err != nil {
			return true, fmt.Errorf("failed to delete published rows: %w", err)
		}
		s.pending = nil
	}
	for {
		var got bool
		qctx, cancel := context.WithTimeout(ctx, batchTimeout)
		err := conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", lockKey(s.st.Table, "consume")).Scan(&got)
		cancel()
		if err != nil {
			return true, fmt.Errorf("failed to ask for the table's lock: %w", err)
		}
		if got {
			break
		}
		s.setStatus(StateStandby, nil)
		if err := sleep(ctx, s.st.Poll); err != nil {
			return true, err
		}
	}
	qctx, cancel = context.WithTimeout(ctx, batchTimeout)
	_, err = conn.Exec(qctx, "LISTEN "+pgx.Identifier{s.st.Table.Channel()}.Sanitize())
	cancel()
	if err != nil {
		return true, fmt.Errorf("failed to listen: %w", err)
	}
	s.setStatus(StateConsuming, nil)
	for {
		more, err := s.consume(ctx, conn)
		if err != nil {
			return true, err
		}
		if more {
			continue
		}
		// pgx.Conn keeps the notifications that came during the batch's
		// queries, so a row committed meanwhile is not waited for.
		wctx, cancel := context.WithTimeout(ctx, s.st.Poll)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		if err != nil && !(pgconn.Timeout(err) && ctx.Err() == nil) {
			return true, fmt.Errorf("failed to wait for rows: %w", err)
		}
	}
}

// closeConn closes conn, telling the database within a second: one that
// stopped answering does not hold the caller.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// rollback ends tx if it is still open (after a commit it does nothing),
// within rollbackTimeout even when ctx has ended: a database that stopped
// answering must not hold the caller until TCP gives up.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(rctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// row is one row of the outbox table as read. Every column but id is
// read as nullable text: the table is the application's, and a row it
// got wrong is a dead letter, not an error.
type row struct {
	id                    int64
	topic, typ, key, data *string
	created               *time.Time
}

// maxBatchBytes bounds the rows one batch holds in memory, besides their
// count (Settings.Batch): a batch ends at the row that crosses it, and the
// rows after it wait for the next.
const maxBatchBytes = 16 << 20

// consume reads a batch of rows, publishes the good ones, moves the bad
// ones to the dead-letter table and deletes them all, in one transaction,
// and reports whether there may be more rows (the batch was full).
func (s *Source) consume(ctx context.Context, conn *pgx.Conn) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("failed to begin: %w", err)
	}
	defer rollback(ctx, tx)
	rs, err := tx.Query(ctx, "SELECT id, topic, type, key, data::text, created_at FROM "+s.st.Table.outbox()+
		" ORDER BY id LIMIT $1 FOR UPDATE", s.st.Batch)
	if err != nil {
		return false, fmt.Errorf("failed to read rows: %w", err)
	}
	var rows []row
	size := 0
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.id, &r.topic, &r.typ, &r.key, &r.data, &r.created); err != nil {
			rs.Close()
			return false, fmt.Errorf("failed to read rows: %w", err)
		}
		rows = append(rows, r)
		if size += r.size(); size >= maxBatchBytes {
			more = true
			rs.Close()
			break
		}
	}
	if err := rs.Err(); err != nil {
		return false, fmt.Errorf("failed to read rows: %w", err)
	}
	if len(rows) == 0 {
		return false, tx.Commit(ctx)
	}
	ids := make([]int64, len(rows))
	drafts := make([]hub.Draft, 0, len(rows))
	var good []int64
	dead := 0
	for i, r := range rows {
		ids[i] = r.id
		d, reason := s.draft(r)
		if reason != "" {
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.st.Table.dead()+
				" (id, topic, type, key, data, created_at, reason) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)"+
				" ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, failed_at = now()",
				r.id, r.topic, r.typ, r.key, r.data, r.created, reason); err != nil {
				return false, fmt.Errorf("failed to move row %d to the dead letters: %w", r.id, err)
			}
			s.log.Warn("outbox: row moved to the dead letters", "id", r.id, "reason", reason)
			dead++
			continue
		}
		drafts = append(drafts, d)
		good = append(good, r.id)
	}
	if len(drafts) > 0 {
		if _, err := s.o.Publish(ctx, drafts...); err != nil {
			return false, fmt.Errorf("failed to publish: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+s.st.Table.outbox()+" WHERE id = ANY($1)", ids); err != nil {
		s.pending = good
		return false, fmt.Errorf("failed to delete published rows: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		s.pending = good
		return false, fmt.Errorf("failed to commit: %w", err)
	}
	s.published.Add(uint64(len(drafts)))
	s.dead.Add(uint64(dead))
	return more || len(rows) == s.st.Batch, nil
}

// size is what a row holds in memory, roughly.
func (r *row) size() int {
	n := 64
	for _, p := range []*string{r.topic, r.typ, r.key, r.data} {
		if p != nil {
			n += len(*p)
		}
	}
	return n
}

// draft makes a row's event, or says why it cannot be one.
func (s *Source) draft(r row) (hub.Draft, string) {
	if r.topic == nil {
		return hub.Draft{}, "invalid topic: null"
	}
	d := hub.Draft{Topic: *r.topic, Dedupe: s.prefix + strconv.FormatInt(r.id, 10)}
	if r.typ != nil {
		d.Type = *r.typ
	}
	if r.key != nil {
		d.Key = *r.key
		if d.Key == "" {
			return hub.Draft{}, "invalid key: empty (use NULL for none)"
		}
	}
	if r.data != nil {
		if len(*r.data) > s.o.MaxData {
			return hub.Draft{}, fmt.Sprintf("too large: data of %d bytes, at most %d", len(*r.data), s.o.MaxData)
		}
		d.Data = []byte(*r.data)
	}
	if err := d.Normalize(); err != nil {
		return hub.Draft{}, err.Error()
	}
	return d, ""
}
