package outbox

import (
	"fmt"
	"hash/fnv"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Settings are what a source URL says besides where the database is.
type Settings struct {
	Table Table
	// Batch is the most rows one transaction consumes; default
	// DefaultBatch, at most MaxBatch.
	Batch int
	// Poll is how often the consumer looks at the table without a NOTIFY,
	// and how often a standby node asks for the lock; default DefaultPoll.
	Poll time.Duration
}

// Defaults and bounds of Settings.
const (
	DefaultBatch = 500
	MaxBatch     = 10000
	DefaultPoll  = time.Second
)

// Herald's own parameters of a source URL; the others go to PostgreSQL.
var ownParams = []string{"table", "batch", "poll"}

// ParseURL reads a source URL, postgres://…?table=NAME&batch=N&poll=D (or
// postgresql://). It checks Herald's parameters and PostgreSQL's.
func ParseURL(s string) (Settings, error) {
	_, st, err := parseURL(s)
	return st, err
}

func parseURL(s string) (*pgx.ConnConfig, Settings, error) {
	st := Settings{Batch: DefaultBatch, Poll: DefaultPoll}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, st, fmt.Errorf("invalid outbox source: want a postgres:// URL")
	}
	q := u.Query()
	table := q.Get("table")
	if table == "" {
		table = DefaultTable
	}
	if st.Table, err = ParseTable(table); err != nil {
		return nil, st, err
	}
	if v := q.Get("batch"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxBatch {
			return nil, st, fmt.Errorf("invalid outbox source: batch must be 1 to %d", MaxBatch)
		}
		st.Batch = n
	}
	if v := q.Get("poll"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Millisecond || d > time.Minute {
			return nil, st, fmt.Errorf("invalid outbox source: poll must be a duration from 10ms to 1m")
		}
		st.Poll = d
	}
	for _, p := range ownParams {
		q.Del(p)
	}
	u.RawQuery = q.Encode()
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		// pgx's message may quote the URL, password and all.
		return nil, st, fmt.Errorf("invalid outbox source: PostgreSQL refuses the connection settings")
	}
	return cfg, st, nil
}

// Redact returns a source URL without its password, for logs and /readyz.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "postgres://(invalid)"
	}
	return u.Redacted()
}

// lockKey is the advisory lock of one table for one purpose: "consume" is
// held by the node that consumes it, "init" while its schema is created.
func lockKey(t Table, purpose string) int64 {
	h := fnv.New64a()
	h.Write([]byte("herald.outbox." + purpose + "." + t.String()))
	return int64(h.Sum64())
}
