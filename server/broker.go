package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/action/natsstore"
	"github.com/heraldpush/herald/action/redisstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/hub/redisbroker"
)

// brokerConnectTimeout bounds connecting to the broker at start.
const brokerConnectTimeout = 10 * time.Second

// newBroker connects the --broker, and the action store that goes with it:
// this process's memory for the memory broker, the cluster's store on Redis
// or NATS. The returned func releases what they hold (the connections, the
// memory store's janitor), after the hub has closed the broker.
func (c *Config) newBroker(log *slog.Logger) (hub.Broker, action.Store, func(), error) {
	switch {
	case c.Broker == "memory":
		st := memstore.New(memstore.Options{TTL: c.ActionTTL, MaxFinished: c.ActionMaxFinished, MaxFinishedBytes: c.ActionMaxBytes,
			MaxQueuedBytes: c.ActionMaxBytes})
		return hub.NewMemoryBroker(hub.MemoryOptions{
			Size: c.HistorySize, MaxBytes: c.HistoryBytes, TTL: c.historyTTL(),
			StateMaxKeys: c.StateMaxKeys, StateMaxBytes: c.StateMaxBytes, PresenceMaxMembers: c.PresenceMaxMembers,
		}), st, st.Close, nil
	case strings.HasPrefix(c.Broker, "nats://"), strings.HasPrefix(c.Broker, "tls://"):
		return c.newNATSBroker(log)
	default:
		return c.newRedisBroker(log)
	}
}

// CheckBroker checks a broker URL as New reads it, without connecting.
func CheckBroker(broker string) error {
	switch {
	case broker == "memory":
		return nil
	case strings.HasPrefix(broker, "nats://"), strings.HasPrefix(broker, "tls://"):
		_, _, err := natsBrokerURL(broker)
		return err
	case strings.HasPrefix(broker, "redis://"), strings.HasPrefix(broker, "rediss://"):
		_, _, err := redisBrokerURL(broker)
		return err
	}
	return configErrorf("--broker %s is not supported (memory, redis://…, rediss://…, nats://… or tls://…)", broker)
}

// redisBrokerURL reads a redis:// --broker: the client's options, and the
// key prefix of its prefix= parameter, which go-redis does not know.
func redisBrokerURL(s string) (*redis.Options, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", configErrorf("--broker: %v", err)
	}
	q := u.Query()
	prefix := q.Get("prefix")
	q.Del("prefix")
	u.RawQuery = q.Encode()
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, "", configErrorf("--broker: %v", err)
	}
	return opts, prefix, nil
}

func (c *Config) newRedisBroker(log *slog.Logger) (hub.Broker, action.Store, func(), error) {
	opts, prefix, err := redisBrokerURL(c.Broker)
	if err != nil {
		return nil, nil, nil, err
	}
	// go-redis logs its reconnect attempts to the standard logger; the
	// broker reports failures itself, so these go to debug.
	// It is process-wide: the first server's logger takes them.
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{log}) })
	// A request's deadline bounds its reads and writes too, so that a
	// publish to an unreachable Redis answers within its time.
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), brokerConnectTimeout)
	defer cancel()
	b, err := redisbroker.New(ctx, redisbroker.Options{
		Client: rdb, Prefix: prefix, Size: c.HistorySize, MaxBytes: c.HistoryBytes, TTL: c.historyTTL(), Logger: log,
		StateMaxKeys: c.StateMaxKeys, StateMaxBytes: c.StateMaxBytes, PresenceMaxMembers: c.PresenceMaxMembers,
	})
	if err != nil {
		rdb.Close()
		return nil, nil, nil, fmt.Errorf("failed to connect to %s: %w", redactBroker(c.Broker), err)
	}
	store, err := redisstore.New(ctx, rdb, prefix)
	if err != nil {
		_ = b.Close()
		rdb.Close()
		return nil, nil, nil, fmt.Errorf("failed to connect to %s: %w", redactBroker(c.Broker), err)
	}
	return b, store, func() { rdb.Close() }, nil
}

var redisLogOnce sync.Once

// redisLogger routes go-redis's own messages into the server's log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// natsBrokerURL splits a nats:// --broker into the server list nats.go
// takes and the stream's options from the query.
func natsBrokerURL(s string) (servers string, o natsbroker.Options, err error) {
	servers, query, _ := strings.Cut(s, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", o, configErrorf("--broker: %v", err)
	}
	for k := range q {
		switch k {
		case "stream", "subjects", "replicas", "storage":
		default:
			return "", o, configErrorf("--broker: unknown NATS option %q (stream, subjects, replicas, storage)", k)
		}
	}
	o.Stream, o.Subjects = q.Get("stream"), q.Get("subjects")
	if r := q.Get("replicas"); r != "" {
		if o.Replicas, err = strconv.Atoi(r); err != nil || o.Replicas < 1 || o.Replicas > 5 {
			return "", o, configErrorf("--broker: replicas must be 1 to 5, got %q", r)
		}
	}
	switch q.Get("storage") {
	case "", "file":
	case "memory":
		o.Memory = true
	default:
		return "", o, configErrorf("--broker: storage must be file or memory, got %q", q.Get("storage"))
	}
	return servers, o, nil
}

func (c *Config) newNATSBroker(log *slog.Logger) (hub.Broker, action.Store, func(), error) {
	servers, o, err := natsBrokerURL(c.Broker)
	if err != nil {
		return nil, nil, nil, err
	}
	// nats.go calls these on a goroutine of its own; closed, its last call,
	// tells the release func that none is left to log after the server.
	closed := make(chan struct{})
	nc, err := nats.Connect(servers,
		nats.Name("herald"),
		nats.Timeout(brokerConnectTimeout),
		nats.MaxReconnects(-1), // a node keeps trying; /readyz says it cannot serve meanwhile
		nats.ReconnectWait(250*time.Millisecond),
		// A publish sent while disconnected fails at once rather than
		// being buffered and stored after its client got 503.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats: reconnected", "server", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats: error", "err", err) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to connect to NATS at %s: %w", redactBroker(servers), err)
	}
	release := func() {
		nc.Close()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			log.Warn("nats: the connection's callbacks did not finish within 5s")
		}
	}
	o.Conn, o.Size, o.MaxBytes, o.TTL, o.Logger = nc, c.HistorySize, c.HistoryBytes, c.historyTTL(), log
	o.StateMaxKeys, o.StateMaxBytes, o.PresenceMaxMembers = c.StateMaxKeys, c.StateMaxBytes, c.PresenceMaxMembers
	if len(c.Sources) > 0 {
		// A source's rows carry dedupe keys, which the stream remembers
		// only within its duplicates window (docs/outbox.md).
		o.DedupeWindow = hub.DefaultDedupeWindow
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokerConnectTimeout)
	defer cancel()
	b, err := natsbroker.New(ctx, o)
	if err != nil {
		release()
		return nil, nil, nil, fmt.Errorf("failed to open the NATS broker: %w", err)
	}
	store, err := natsstore.New(ctx, natsstore.Options{
		Conn: nc, Stream: o.Stream, TTL: c.ActionTTL, Replicas: o.Replicas, Memory: o.Memory,
	})
	if err != nil {
		_ = b.Close()
		release()
		return nil, nil, nil, fmt.Errorf("failed to open the NATS broker: %w", err)
	}
	return b, store, release, nil
}

// redactBroker hides the passwords of a --broker (a URL, or a NATS server
// list) for logs.
func redactBroker(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
