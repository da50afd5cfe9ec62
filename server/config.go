package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/outbox"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/ws"
)

// Defaults that New applies to the zero fields of a Config; "herald serve"
// shows the same ones as its flags' defaults.
const (
	DefaultAddr               = "127.0.0.1:8080"
	DefaultBroker             = "memory"
	DefaultHistorySize        = 10000
	DefaultHistoryBytes       = hub.DefaultHistoryBytes
	DefaultHistoryTTL         = time.Hour
	DefaultTailBytes          = hub.DefaultTailBytes
	DefaultStateMaxKeys       = hub.DefaultStateMaxKeys
	DefaultPresenceMaxMembers = hub.DefaultPresenceMaxMembers
	DefaultStateMaxBytes      = hub.DefaultStateMaxBytes
	DefaultQueueBytes         = 512 << 10
	DefaultHeartbeat          = 15 * time.Second
	DefaultSSERetry           = 2 * time.Second
	DefaultWriteTimeout       = httpapi.DefaultWriteTimeout
	// MaxWriteLinger bounds --write-linger: it is added to the latency of
	// every delivery.
	MaxWriteLinger     = 100 * time.Millisecond
	DefaultReadTimeout = httpapi.DefaultReadTimeout
	DefaultMaxBody     = httpapi.DefaultMaxBody
	// DefaultMaxHeaderBytes bounds a request's line and headers. net/http's
	// own 1 MiB would let each connection still sending its headers (for
	// up to 10 s) hold a megabyte.
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultWSReadLimit         = 64 << 10
	DefaultWSPingInterval      = 25 * time.Second
	DefaultWSMessageRate       = ws.DefaultMessageRate
	DefaultWSMaxTopics         = ws.DefaultMaxTopics
	DefaultMaxConns            = 100000
	DefaultAuth                = "none"
	DefaultAuthUpstreamTimeout = auth.DefaultUpstreamTimeout
	DefaultShutdownTimeout     = 10 * time.Second
	DefaultActionWorkers       = 16
	DefaultActionQueue         = 10000
	DefaultActionTTL           = time.Hour
	DefaultActionLease         = action.DefaultLease
	DefaultActionMaxFinished   = memstore.DefaultMaxFinished
	DefaultActionMaxBytes      = memstore.DefaultMaxFinishedBytes
	DefaultActionTimeout       = 10 * time.Second
	DefaultActionMaxAttempts   = 5
)

// Config is the configuration of a Server. A zero field takes its Default
// constant; where zero would mean "no limit", a negative value says so.
// Validate refuses any other negative count, size or duration.
// Each field is the value of the "herald serve" flag of the same name
// (docs/operations.md and the README describe them).
type Config struct {
	Addr        string // host:port to listen on; port 0 picks a free one
	MetricsAddr string // internal listener of GET /metrics (and Pprof); empty: /metrics on Addr
	Pprof       bool   // Go's profiles on MetricsAddr, never on Addr
	TLSCert     string // PEM file; with TLSKey, serve HTTPS and HTTP/2
	TLSKey      string // PEM file
	H2C         bool   // HTTP/2 without TLS besides HTTP/1.1

	// Broker is "memory" or the URL of a redis://, rediss://, nats:// or
	// tls:// broker shared by the nodes of a cluster.
	Broker       string
	HistorySize  int
	HistoryBytes int
	HistoryTTL   time.Duration // negative: no age limit
	// TailBytes bounds the newest events a node of a cluster keeps from
	// the log it reads to serve catch-ups (hub.Options.TailBytes), at most
	// HistorySize of them. Negative: none.
	TailBytes int
	// StateMaxKeys bounds the keys of one topic's state, StateMaxBytes the
	// state of every topic together (--broker memory).
	StateMaxKeys  int
	StateMaxBytes int
	// PresenceMaxMembers bounds the members of one topic's presence; past
	// it a join is refused (memory and Redis brokers).
	PresenceMaxMembers int
	QueueBytes         int
	Shards             int // 0: GOMAXPROCS

	Heartbeat    time.Duration
	SSERetry     time.Duration
	WriteTimeout time.Duration
	// WriteLinger is how long a connection's writer, woken by an event
	// soon after its previous write, waits for more before its write
	// (hub.WriterOptions.Linger): fewer writes for up to that much more
	// latency. 0: off; at most MaxWriteLinger.
	WriteLinger time.Duration
	// NoDirectWrites has every event go through its connection's writer
	// goroutine, even to an idle connection that the hub's dispatcher
	// could write to itself (hub.Options.NoDirectWrites; --direct-writes).
	NoDirectWrites bool
	ReadTimeout    time.Duration
	MaxBody        int64
	MaxHeaderBytes int
	WSReadLimit    int64
	WSPingInterval time.Duration
	WSMessageRate  float64 // negative: no limit
	WSMaxTopics    int
	// WSNoCompression turns WebSocket permessage-deflate off
	// (--ws-compression=false); by default it is negotiated with every
	// client that offers it.
	WSNoCompression bool

	AllowedOrigins []string // Origin patterns that may open WebSockets
	CORSOrigins    []string // origins whose pages may use the API
	MaxConns       int      // negative: no limit
	MaxConnsPerIP  int      // 0: no limit
	RatePublish    float64  // 0: no limit
	RateActions    float64  // 0: no limit

	Auth         string // "none", "jwt" or "upstream"
	JWTSecret    string
	JWTPublicKey string // PEM file
	JWTJWKSURL   string // https://, or http:// to a loopback host
	JWTAudience  string
	JWTIssuer    string
	// JWTLeeway tolerates clock skew on a token's exp and nbf (0: the
	// default, auth.DefaultLeeway; negative: none).
	JWTLeeway       time.Duration
	PublicSubscribe []hub.Pattern
	APIKey          string
	// AuthUpstream is the application's endpoint asked for the grants of
	// requests without a Herald token (auth.Upstream): with Auth "jwt"
	// besides tokens, with Auth "upstream" alone.
	AuthUpstream        string
	AuthUpstreamTimeout time.Duration

	// ShutdownTimeout bounds the shutdown that Serve starts when its
	// context ends.
	ShutdownTimeout time.Duration

	// ActionUpstreams send actions to HTTP backends, in this order in the
	// log. ActionHandlers run actions in the process; their keys are
	// action types as for action.Service.Handle, and a key there wins over
	// an upstream of the same key. Without either, only "echo" runs.
	ActionUpstreams []Upstream
	ActionHandlers  map[string]action.Handler
	ActionWorkers   int
	// ActionQueue bounds the actions accepted and not yet done, waiting
	// for a worker or running (action.Options.QueueSize): the node's with
	// the memory broker, the cluster's with a shared one.
	ActionQueue int
	ActionTTL   time.Duration
	ActionLease time.Duration
	// ActionMaxFinished and ActionMaxBytes bound the finished actions
	// kept in memory with the memory broker (memstore.Options); a shared
	// broker's store expires them after ActionTTL. ActionMaxBytes bounds
	// the queued actions with their payloads too (MaxQueuedBytes): past
	// it a new action is refused as when the queue is full.
	ActionMaxFinished int
	ActionMaxBytes    int
	ActionTimeout     time.Duration
	ActionMaxAttempts int

	// Sources are event sources the node consumes into the log: outbox
	// tables, as postgres://…?table=NAME URLs (package outbox).
	Sources []string

	Logger  *slog.Logger // nil: slog.Default()
	Version string       // reported by /metrics and the log
}

// Upstream sends the action types that match Type to an HTTP backend.
// Type is an exact type, a prefix (ending in "." or "*"), or "" for every
// type without another handler: the keys of action.Service.Handle.
type Upstream struct {
	Type string
	URL  string
}

// ConfigError is a Config that New refuses before starting anything.
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &ConfigError{msg: fmt.Sprintf(format, args...)}
}

// IsConfigError reports whether err is, or wraps, a *ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if c.Auth == "" {
		c.Auth = DefaultAuth
	}
	def(&c.HistorySize, DefaultHistorySize)
	def(&c.HistoryBytes, DefaultHistoryBytes)
	def(&c.StateMaxKeys, DefaultStateMaxKeys)
	def(&c.StateMaxBytes, DefaultStateMaxBytes)
	def(&c.PresenceMaxMembers, DefaultPresenceMaxMembers)
	def(&c.QueueBytes, DefaultQueueBytes)
	def(&c.WSMaxTopics, DefaultWSMaxTopics)
	def(&c.MaxConns, DefaultMaxConns)
	def(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&c.ActionWorkers, DefaultActionWorkers)
	def(&c.ActionQueue, DefaultActionQueue)
	def(&c.ActionMaxFinished, DefaultActionMaxFinished)
	def(&c.ActionMaxBytes, DefaultActionMaxBytes)
	def(&c.ActionMaxAttempts, DefaultActionMaxAttempts)
	defDur(&c.HistoryTTL, DefaultHistoryTTL)
	defDur(&c.Heartbeat, DefaultHeartbeat)
	defDur(&c.SSERetry, DefaultSSERetry)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	defDur(&c.ReadTimeout, DefaultReadTimeout)
	defDur(&c.WSPingInterval, DefaultWSPingInterval)
	defDur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	defDur(&c.ActionTTL, DefaultActionTTL)
	defDur(&c.ActionLease, DefaultActionLease)
	defDur(&c.ActionTimeout, DefaultActionTimeout)
	defDur(&c.AuthUpstreamTimeout, DefaultAuthUpstreamTimeout)
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.WSReadLimit == 0 {
		c.WSReadLimit = DefaultWSReadLimit
	}
	if c.WSMessageRate == 0 {
		c.WSMessageRate = DefaultWSMessageRate
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// historyTTL and maxConns are the values the components take, where 0
// means no limit.
func (c *Config) historyTTL() time.Duration { return max(c.HistoryTTL, 0) }
func (c *Config) maxConns() int             { return max(c.MaxConns, 0) }

// Validate checks the values of c, and how they go together, reading no
// file and connecting nothing. New checks the same; a refused Config is a
// *ConfigError, named by the flags of "herald serve".
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := CheckBroker(c.Broker); err != nil {
		return err
	}
	for _, src := range c.Sources {
		if _, err := outbox.ParseURL(src); err != nil {
			return configErrorf("--source %s: %v", outbox.Redact(src), err)
		}
	}
	// The fields whose 0 is their default: what is left to refuse is a
	// negative value. (The fields whose negative means no limit are not
	// here.)
	for _, f := range []struct {
		flag string
		v    int64
	}{
		{"history-size", int64(c.HistorySize)},
		{"history-bytes", int64(c.HistoryBytes)},
		{"state-max-keys", int64(c.StateMaxKeys)},
		{"state-max-bytes", int64(c.StateMaxBytes)},
		{"presence-max-members", int64(c.PresenceMaxMembers)},
		{"queue-bytes", int64(c.QueueBytes)},
		{"heartbeat", int64(c.Heartbeat)},
		{"sse-retry", int64(c.SSERetry)},
		{"write-timeout", int64(c.WriteTimeout)},
		{"read-timeout", int64(c.ReadTimeout)},
		{"max-body", c.MaxBody},
		{"max-header-bytes", int64(c.MaxHeaderBytes)},
		{"ws-read-limit", c.WSReadLimit},
		{"ws-ping-interval", int64(c.WSPingInterval)},
		{"ws-max-topics", int64(c.WSMaxTopics)},
		{"shutdown-timeout", int64(c.ShutdownTimeout)},
		{"action-workers", int64(c.ActionWorkers)},
		{"action-queue", int64(c.ActionQueue)},
		{"action-ttl", int64(c.ActionTTL)},
		{"action-max-finished", int64(c.ActionMaxFinished)},
		{"action-max-bytes", int64(c.ActionMaxBytes)},
		{"action-timeout", int64(c.ActionTimeout)},
		{"action-max-attempts", int64(c.ActionMaxAttempts)},
		{"auth-upstream-timeout", int64(c.AuthUpstreamTimeout)},
	} {
		if f.v <= 0 {
			return configErrorf("--%s must be positive", f.flag)
		}
	}
	switch {
	case c.Pprof && c.MetricsAddr == "":
		return configErrorf("--pprof needs --metrics-addr: profiles are served on the internal listener only")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return configErrorf("--tls-cert and --tls-key go together: give both or neither")
	case c.H2C && c.TLSCert != "":
		return configErrorf("--h2c is HTTP/2 without TLS; with --tls-cert the server speaks HTTP/2 over TLS already")
	case int64(c.HistoryBytes) < c.MaxBody:
		// A smaller bound could not retain the largest event a client may
		// publish (and NATS would refuse to store it).
		return configErrorf("--history-bytes (%d) must be at least --max-body (%d)", c.HistoryBytes, c.MaxBody)
	case int64(c.StateMaxBytes) < c.MaxBody:
		// Else the largest keyed event a client may publish would never
		// be kept as its key's latest value.
		return configErrorf("--state-max-bytes (%d) must be at least --max-body (%d)", c.StateMaxBytes, c.MaxBody)
	case c.Broker == "memory" && int64(c.ActionMaxBytes) < c.MaxBody:
		// Else the largest action a client may submit would always be
		// refused as over the queue's bytes (the memory store's; a
		// shared broker's store does not use the bound).
		return configErrorf("--action-max-bytes (%d) must be at least --max-body (%d)", c.ActionMaxBytes, c.MaxBody)
	case c.Shards < 0:
		return configErrorf("--shards must not be negative, got %d", c.Shards)
	case c.ActionLease < 300*time.Millisecond:
		return configErrorf("--action-lease must be at least 300ms, got %v", c.ActionLease)
	case c.WriteLinger < 0 || c.WriteLinger > MaxWriteLinger:
		return configErrorf("--write-linger must be between 0 and %v, got %v", MaxWriteLinger, c.WriteLinger)
	case c.MaxConnsPerIP < 0:
		return configErrorf("--max-conns-per-ip must not be negative, got %d", c.MaxConnsPerIP)
	case c.RatePublish < 0 || c.RateActions < 0:
		return configErrorf("--rate-publish and --rate-actions must not be negative")
	case c.Auth != "none" && c.Auth != "jwt" && c.Auth != "upstream":
		return configErrorf("--auth must be none, jwt or upstream, got %q", c.Auth)
	case c.Auth == "upstream" && c.AuthUpstream == "":
		return configErrorf("--auth upstream needs --auth-upstream URL")
	case c.Auth == "upstream" && (c.JWTSecret != "" || c.JWTPublicKey != "" || c.JWTJWKSURL != "" || c.JWTAudience != "" || c.JWTIssuer != ""):
		return configErrorf("the --jwt-* flags need --auth jwt (with --auth upstream no token is verified; --auth jwt and --auth-upstream together verify tokens and ask the application for requests without one)")
	case c.Auth == "none" && c.AuthUpstream != "":
		return configErrorf("--auth-upstream needs --auth upstream, or --auth jwt to verify tokens as well")
	case c.Auth == "jwt" && c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKSURL == "":
		return configErrorf("--auth jwt needs --jwt-secret, --jwt-public-key or --jwt-jwks-url")
	case c.Auth == "none" && (c.JWTSecret != "" || c.JWTPublicKey != "" || c.JWTJWKSURL != "" || c.JWTAudience != "" ||
		c.JWTIssuer != "" || len(c.PublicSubscribe) > 0 || c.APIKey != ""):
		return configErrorf("the --jwt-* flags need --auth jwt, and --public-subscribe and --api-key need --auth jwt or upstream")
	}
	if c.AuthUpstream != "" {
		if err := auth.CheckUpstreamURL(c.AuthUpstream); err != nil {
			return configErrorf("--auth-upstream: %v", err)
		}
	}
	if c.JWTJWKSURL != "" {
		if err := auth.CheckJWKSURL(c.JWTJWKSURL); err != nil {
			return configErrorf("--jwt-jwks-url: %v", err)
		}
	}
	for typ, h := range c.ActionHandlers {
		if h == nil {
			return configErrorf("the action handler of type %q is nil", typ)
		}
	}
	return nil
}

// Check runs Validate and the checks of New that connect nothing: the
// authentication settings, reading JWTPublicKey (the JWKS is not fetched).
func (c Config) Check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	_, _, u, err := c.authenticator()
	if u != nil {
		u.Close()
	}
	return err
}
