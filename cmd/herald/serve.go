package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/server"
)

// envPrefix starts the environment variable of every flag:
// --history-size is HERALD_HISTORY_SIZE.
const envPrefix = "HERALD_"

// serveConfig is the parsed and validated configuration of "herald serve".
type serveConfig struct {
	addr            string
	metricsAddr     string
	pprof           bool
	tlsCert         string // PEM file; with tlsKey, serve HTTPS and HTTP/2
	tlsKey          string // PEM file
	h2c             bool   // HTTP/2 without TLS besides HTTP/1.1
	broker          string
	historySize     int
	historyBytes    int
	historyTTL      time.Duration
	tailBytes       int
	stateMaxKeys    int
	presenceMax     int
	stateMaxBytes   int
	queueBytes      int
	shards          int
	heartbeat       time.Duration
	sseRetry        time.Duration
	writeTimeout    time.Duration
	writeLinger     time.Duration
	directWrites    bool
	readTimeout     time.Duration
	maxBody         int64
	maxHeaderBytes  int
	wsReadLimit     int64
	wsPingInterval  time.Duration
	wsCompression   bool
	allowedOrigins  []string
	corsOrigins     []string
	maxConns        int
	maxConnsPerIP   int
	ratePublish     float64
	rateActions     float64
	wsMessageRate   float64
	wsMaxTopics     int
	authMode        string
	jwtSecret       string
	jwtPublicKey    string // PEM file
	jwtJWKSURL      string
	jwtAudience     string
	jwtIssuer       string
	jwtLeeway       time.Duration
	publicSubscribe []hub.Pattern
	apiKey          string
	authUpstream    string
	authUpstreamTO  time.Duration
	shutdownTimeout time.Duration
	logLevel        slog.Level
	logFormat       string

	actionUpstream    []upstreamRoute // from --action-upstream, in the order given
	sources           []string        // from --source
	actionWorkers     int
	actionQueue       int
	actionTTL         time.Duration
	actionLease       time.Duration
	actionMaxFinished int
	actionMaxBytes    int
	actionTimeout     time.Duration
	actionMaxAttempts int

	settings []setting // every flag's value and where it came from, for "herald config print"
}

// upstreamRoute sends the action types that match typ to an HTTP backend.
// typ is an exact type, a prefix (ending in "." or "*"), or "" for every
// type without another handler: the keys of action.Service.Handle.
type upstreamRoute struct {
	typ string
	url string
}

// envName returns the environment variable that backs a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseServeFlags parses args, then fills every flag absent from args from
// the --config file and its environment variable (getenv), so the command
// line wins over the environment, which wins over the file (see
// applyConfigSources). An empty variable counts as unset. Help goes to
// stdout.
func parseServeFlags(args []string, getenv func(string) (string, bool), stdout io.Writer) (serveConfig, error) {
	var c serveConfig
	var logLevel string
	var origins, corsOrigins, upstream, public listValue
	var sources sourceList
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.String(configFlag, "", "YAML `file` of flag values, e.g. history-size: 20000 (see docs/operations.md); the environment and the command line override it")
	fs.StringVar(&c.addr, "addr", server.DefaultAddr, "`address` to listen on (host:port; port 0 picks a free one)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "`address` of an internal listener for GET /metrics (and --pprof); empty: /metrics is served on --addr")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiles under /debug/pprof/ (and POST /debug/free-memory) on --metrics-addr, never on --addr")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` with the server's certificate (and its chain): serve HTTPS, with HTTP/2 for browsers (needs --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.BoolVar(&c.h2c, "h2c", false, "also accept HTTP/2 without TLS (prior knowledge), for a proxy that speaks h2c to Herald; HTTP/1.1 still works on the same port")
	fs.StringVar(&c.broker, "broker", server.DefaultBroker, "event broker: memory (one node); for a cluster of nodes sharing one log, redis://[:password@]host:6379/0[?prefix=herald] or nats://[user:password@]host:4222[,host:4222…][?stream=HERALD&subjects=herald.ev&replicas=1&storage=file]")
	fs.IntVar(&c.historySize, "history-size", server.DefaultHistorySize, "events retained for replay and history, at most")
	fs.IntVar(&c.historyBytes, "history-bytes", server.DefaultHistoryBytes, "bound of the retained events' size, in bytes; the oldest go first (redis:// bounds the events' fields, nats:// the stream's MaxBytes)")
	fs.DurationVar(&c.historyTTL, "history-ttl", server.DefaultHistoryTTL, "events older than this are dropped from history (0: no age limit)")
	fs.IntVar(&c.tailBytes, "tail-bytes", server.DefaultTailBytes, "bytes of the newest events a node of a cluster (redis://, nats://) keeps from the log it reads, to serve the catch-up of resuming subscribers from memory rather than from the broker (at most --history-size events; 0: none)")
	fs.IntVar(&c.stateMaxKeys, "state-max-keys", server.DefaultStateMaxKeys, "keys kept in one topic's state (the latest event of each key); past it the least recently written key is dropped")
	fs.IntVar(&c.stateMaxBytes, "state-max-bytes", server.DefaultStateMaxBytes, "bound of every topic's state together, in bytes, at least --max-body; past it the least recently written keys of any topic go first")
	fs.IntVar(&c.presenceMax, "presence-max-members", server.DefaultPresenceMaxMembers, "members of one topic's presence, at most; past it a join is refused (the connection subscribes but is not a member)")
	fs.IntVar(&c.queueBytes, "queue-bytes", server.DefaultQueueBytes, "outbound queue bound per connection, in bytes; a client that overflows it is disconnected as a slow consumer")
	fs.IntVar(&c.shards, "shards", 0, "hub shards (0: GOMAXPROCS)")
	fs.DurationVar(&c.heartbeat, "heartbeat", server.DefaultHeartbeat, "interval of SSE \": ping\" comment lines")
	fs.DurationVar(&c.sseRetry, "sse-retry", server.DefaultSSERetry, "reconnect delay suggested to SSE clients (the retry: line)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", server.DefaultWriteTimeout, "deadline for each write to an SSE or WebSocket client, and for writing any other response (moved on as a large one is written); missing it disconnects the client")
	fs.BoolVar(&c.directWrites, "direct-writes", true, "let the hub's dispatchers write an event to an idle connection themselves, in a write that does not wait, instead of waking its writer: less CPU and latency at low rates; each dispatcher stops while it is busy for more than three quarters of the time, so that under load every event goes through the writers, which combine them (see docs/benchmarks.md)")
	fs.DurationVar(&c.writeLinger, "write-linger", 0, "how long a connection's writer, woken by an event less than this after its previous write, waits for more before it writes them together: fewer write calls (server CPU) for up to this much more latency; a connection whose events come further apart is not delayed (0: off; at most 100ms; see docs/benchmarks.md)")
	fs.DurationVar(&c.readTimeout, "read-timeout", server.DefaultReadTimeout, "how long a request body may take to arrive once its headers have; past it: 408 and the connection closed (streams are not affected)")
	fs.Int64Var(&c.maxBody, "max-body", server.DefaultMaxBody, "largest HTTP request body, in bytes")
	fs.IntVar(&c.maxHeaderBytes, "max-header-bytes", server.DefaultMaxHeaderBytes, "largest HTTP request line and headers together, in bytes, give or take Go's 4 KiB of slack (larger: 431; over HTTP/1.x the connection closed)")
	fs.Int64Var(&c.wsReadLimit, "ws-read-limit", server.DefaultWSReadLimit, "largest WebSocket message from a client, in bytes (larger: close 1009)")
	fs.DurationVar(&c.wsPingInterval, "ws-ping-interval", server.DefaultWSPingInterval, "interval of WebSocket keep-alive pings")
	fs.BoolVar(&c.wsCompression, "ws-compression", true, "negotiate WebSocket permessage-deflate (without context takeover) with clients that offer it; each event of 512 bytes or more is compressed once for all of them")
	fs.Var(&origins, "allowed-origins", "comma-separated Origin `patterns` allowed to open WebSockets, e.g. app.example.com,*.example.org (empty: same host only); those without a wildcard may also use the herald_token cookie")
	fs.Var(&corsOrigins, "cors-origins", "comma-separated `origins` whose pages may use the API, the SSE stream and /herald.js, e.g. https://app.example.com,https://*.example.org, or * for any; they may open WebSockets too; only those named exactly get credentials (the herald_token cookie) (empty: no cross-origin access)")
	fs.IntVar(&c.maxConns, "max-conns", server.DefaultMaxConns, "open SSE streams and WebSockets at most, in all; more get 503 (0: no limit)")
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", 0, "open streams and WebSockets at most from one client address; more get 429 (0: no limit; behind a proxy every client has the proxy's address)")
	fs.Float64Var(&c.ratePublish, "rate-publish", 0, "events a caller (token subject, else address) may publish per second, over HTTP and WebSocket, in bursts of as many; more get 429 (0: no limit)")
	fs.Float64Var(&c.rateActions, "rate-actions", 0, "actions a caller may submit per second, in bursts of as many; more get 429 (0: no limit)")
	fs.Float64Var(&c.wsMessageRate, "ws-message-rate", server.DefaultWSMessageRate, "messages one WebSocket may send per second (bursts of 1000); a flood closes it with 4029 (negative: no limit)")
	fs.IntVar(&c.wsMaxTopics, "ws-max-topics", server.DefaultWSMaxTopics, "patterns one WebSocket may hold at once")
	fs.StringVar(&c.authMode, "auth", server.DefaultAuth, "authentication: none (anyone may do anything), jwt (a token with grants; see docs/security.md) or upstream (the application answers with grants, --auth-upstream)")
	fs.StringVar(&c.jwtSecret, "jwt-secret", "", "HS256 secret that signs tokens, at least 32 bytes (--auth jwt)")
	fs.StringVar(&c.jwtPublicKey, "jwt-public-key", "", "PEM `file` with the RSA (RS256) or ECDSA P-256 (ES256) public key that verifies tokens (--auth jwt)")
	fs.StringVar(&c.jwtJWKSURL, "jwt-jwks-url", "", "`URL` of the identity provider's JSON Web Key Set (https://, or http:// to a loopback host): RS256, ES256 and EdDSA tokens are verified with the key of their kid, fetched again for a new kid at most every 30s (--auth jwt)")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "if set, tokens must carry this aud (--auth jwt)")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "if set, tokens must carry this iss (--auth jwt)")
	fs.DurationVar(&c.jwtLeeway, "jwt-leeway", auth.DefaultLeeway, "clock skew tolerated on a token's exp and nbf: a token is accepted, and a connection kept, this long past its exp (0: none) (--auth jwt)")
	fs.Var(&public, "public-subscribe", "comma-separated `patterns` anyone may subscribe to without a token, e.g. news.> (--auth jwt or upstream)")
	fs.StringVar(&c.apiKey, "api-key", "", "secret that lets a server publish to any topic, read /v1/stats and use the control API (/v1/disconnect, /v1/unsubscribe) with the X-API-Key header instead of a token (--auth jwt or upstream)")
	fs.StringVar(&c.authUpstream, "auth-upstream", "", "`URL` the application answers with grants at, for requests without a Herald token: it gets their cookies (from pages allowed by --allowed-origins) and Authorization, and answers {\"user\",\"subscribe\",\"publish\",\"actions\",\"expires_in\"} or 401/403; cached per session, 503 when it cannot answer (--auth upstream, or --auth jwt besides tokens; see docs/protocol.md)")
	fs.DurationVar(&c.authUpstreamTO, "auth-upstream-timeout", server.DefaultAuthUpstreamTimeout, "how long one call of --auth-upstream may take; past it the request gets 503")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "how long a graceful shutdown may take before connections are cut")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error (debug logs every request)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.Var(&upstream, "action-upstream", "HTTP backend that runs actions: a `URL` for every action type, or a comma-separated list of TYPE=URL (TYPE exact, or a prefix ending in . or *) with at most one bare URL as the fallback, e.g. billing.=http://billing/actions,http://app/actions (empty: only the built-in echo type)")
	fs.Var(&sources, "source", "event source the node consumes into the log: a PostgreSQL outbox table, postgres://user@host:5432/db?table=herald_outbox[&batch=500&poll=1s] (see docs/outbox.md); give it again for more, or separate them with spaces")
	fs.IntVar(&c.actionWorkers, "action-workers", server.DefaultActionWorkers, "actions run at once")
	fs.IntVar(&c.actionQueue, "action-queue", server.DefaultActionQueue, "accepted actions not yet done (waiting for a worker or running), at most: this node's, or the cluster's with a shared broker; when full, new actions get 503 with Retry-After")
	fs.DurationVar(&c.actionTTL, "action-ttl", server.DefaultActionTTL, "how long a finished action's status (and its idempotency key) is kept")
	fs.DurationVar(&c.actionLease, "action-lease", server.DefaultActionLease, "with a shared broker: how long a node keeps an action it runs without renewing it; another node takes over the actions of a node that died after this")
	fs.IntVar(&c.actionMaxFinished, "action-max-finished", server.DefaultActionMaxFinished, "finished actions kept at most, whatever their age; the oldest are forgotten first")
	fs.IntVar(&c.actionMaxBytes, "action-max-bytes", server.DefaultActionMaxBytes, "bound of the finished actions' records kept on this node (results, errors, keys), in bytes, the oldest forgotten first, and of the queued actions with their payloads, past which a new action gets 503 (not with a shared broker: its records expire after --action-ttl)")
	fs.DurationVar(&c.actionTimeout, "action-timeout", server.DefaultActionTimeout, "deadline of each attempt at an upstream action")
	fs.IntVar(&c.actionMaxAttempts, "action-max-attempts", server.DefaultActionMaxAttempts, "attempts at an action whose upstream fails transiently (5xx, timeout, connection error)")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprint(out, "Usage: herald serve [flags]\n\n"+
			"Runs the Herald server. Every flag can also be set with an environment variable,\n"+
			"HERALD_ followed by the flag name in upper snake case (--history-size is\n"+
			"HERALD_HISTORY_SIZE), or in the YAML file of --config. A flag on the command\n"+
			"line wins over the environment, which wins over the file.\n\nFlags:\n")
		fs.PrintDefaults()
	}

	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return c, err
		}
		return c, usagef("%v (see \"herald serve -h\")", err)
	}
	if fs.NArg() > 0 {
		return c, usagef("serve takes no arguments, got %q (see \"herald serve -h\")", fs.Args())
	}
	settings, err := applyConfigSources(fs, getenv)
	if err != nil {
		return c, err
	}
	c.settings = settings

	c.allowedOrigins = listItems(string(origins))
	for _, o := range listItems(string(corsOrigins)) {
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return c, usagef("--cors-origins: %q is not an origin like https://app.example.com", o)
			}
			o = strings.TrimSuffix(o, "/")
		}
		c.corsOrigins = append(c.corsOrigins, o)
		// A page that may call the API may open a WebSocket too:
		// coder/websocket matches a pattern with :// against the whole
		// origin.
		c.allowedOrigins = append(c.allowedOrigins, o)
	}
	for _, raw := range listItems(string(public)) {
		pat, err := hub.ParsePattern(raw)
		if err != nil {
			return c, usagef("--public-subscribe: %v", err)
		}
		c.publicSubscribe = append(c.publicSubscribe, pat)
	}
	if err := c.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return c, usagef("--log-level must be debug, info, warn or error, got %q", logLevel)
	}
	routes, err := parseUpstream(string(upstream))
	if err != nil {
		return c, err
	}
	c.actionUpstream = routes
	c.sources = sources
	return c, c.validate()
}

// parseUpstream parses --action-upstream: comma-separated entries, each a
// bare URL (the fallback, at most one) or TYPE=URL. An "=" counts as the
// separator only before the URL's "://", so a URL with a query is fine.
func parseUpstream(s string) ([]upstreamRoute, error) {
	var routes []upstreamRoute
	seen := make(map[string]bool)
	for _, e := range listItems(s) {
		r := upstreamRoute{url: e}
		if eq, scheme := strings.Index(e, "="), strings.Index(e, "://"); eq >= 0 && (scheme < 0 || eq < scheme) {
			r.typ, r.url = strings.TrimSpace(e[:eq]), strings.TrimSpace(e[eq+1:])
			if err := checkUpstreamType(r.typ); err != nil {
				return nil, usagef("--action-upstream entry %q: %v", e, err)
			}
		}
		if err := checkUpstreamURL(r.url); err != nil {
			return nil, usagef("--action-upstream entry %q: %v", e, err)
		}
		// "billing.*" and "billing." are the same prefix.
		k := strings.TrimSuffix(r.typ, "*")
		if seen[k] {
			if r.typ == "" {
				return nil, usagef("--action-upstream has more than one fallback URL (entries without TYPE=)")
			}
			return nil, usagef("--action-upstream names %q twice", r.typ)
		}
		seen[k] = true
		routes = append(routes, r)
	}
	return routes, nil
}

// checkUpstreamType accepts an entry's type by the rule for action types
// (hub.ValidateType): an exact type, or a prefix ending in "." or "*",
// whose name without the "*" must be a type itself.
func checkUpstreamType(typ string) error {
	name := strings.TrimSuffix(typ, "*")
	if name == "" {
		return errors.New(`the type before "=" is empty (a bare URL is the fallback for every type)`)
	}
	// "herald" is a type, but "herald*" would cover the reserved namespace.
	if hub.ReservedType(name + ".") {
		return fmt.Errorf("type %q is in the reserved %s namespace", typ, hub.ReservedTypePrefix)
	}
	return hub.ValidateType(name)
}

func checkUpstreamURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("the URL must be absolute, http:// or https://, got %q", s)
	}
	return nil
}

func (c *serveConfig) validate() error {
	switch {
	case c.addr == "":
		// Not passed on: a server.Config's empty Addr is the default.
		return usagef("--addr must not be empty")
	case c.maxConns < 0:
		// Not passed on: a server.Config's negative MaxConns means no limit.
		return usagef("--max-conns must not be negative, got %d", c.maxConns)
	case c.historyTTL < 0:
		return usagef("--history-ttl must not be negative, got %v", c.historyTTL)
	case c.jwtLeeway < 0:
		return usagef("--jwt-leeway must not be negative, got %v", c.jwtLeeway)
	case c.logFormat != "text" && c.logFormat != "json":
		return usagef("--log-format must be text or json, got %q", c.logFormat)
	}
	// The rules that hold for an embedded server too, the broker URL
	// among them.
	if err := c.server(nil).Validate(); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func (c *serveConfig) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runServe runs the server until ctx is cancelled, then shuts it down
// gracefully within --shutdown-timeout. Logs go to stderr, help to stdout.
// ready, if not nil, is called with the listening address once the server
// listens; connections wait in the listener's backlog until Serve takes
// them a moment later.
//
// It returns a *usageError for a bad command line, flag.ErrHelp after -h,
// and nil after a shutdown asked for through ctx (even one that had to cut
// connections when the timeout passed; that is logged).
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) error {
	cfg, err := parseServeFlags(args, os.LookupEnv, stdout)
	if err != nil {
		return err
	}
	srv, err := server.New(cfg.server(cfg.logger(stderr)))
	if server.IsConfigError(err) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	if ready != nil {
		ready(srv.Addr())
	}
	return srv.Serve(ctx)
}

// server maps the flags onto the server's Config. Where a flag's 0 means
// no limit, the Config takes a negative value, as its 0 is the default.
func (c *serveConfig) server(log *slog.Logger) server.Config {
	upstreams := make([]server.Upstream, len(c.actionUpstream))
	for i, r := range c.actionUpstream {
		upstreams[i] = server.Upstream{Type: r.typ, URL: r.url}
	}
	return server.Config{
		Addr: c.addr, MetricsAddr: c.metricsAddr, Pprof: c.pprof, TLSCert: c.tlsCert, TLSKey: c.tlsKey, H2C: c.h2c,
		Broker: c.broker, HistorySize: noDefault(c.historySize), HistoryBytes: noDefault(c.historyBytes), HistoryTTL: noLimit(c.historyTTL), TailBytes: noLimit(c.tailBytes),
		StateMaxKeys: noDefault(c.stateMaxKeys), StateMaxBytes: noDefault(c.stateMaxBytes), PresenceMaxMembers: noDefault(c.presenceMax),
		QueueBytes: noDefault(c.queueBytes), Shards: c.shards,
		Heartbeat: noDefault(c.heartbeat), SSERetry: noDefault(c.sseRetry), WriteTimeout: noDefault(c.writeTimeout), WriteLinger: c.writeLinger, NoDirectWrites: !c.directWrites,
		ReadTimeout: noDefault(c.readTimeout), MaxBody: noDefault(c.maxBody), MaxHeaderBytes: noDefault(c.maxHeaderBytes), WSReadLimit: noDefault(c.wsReadLimit),
		WSPingInterval: noDefault(c.wsPingInterval), WSMessageRate: c.wsMessageRate, WSMaxTopics: noDefault(c.wsMaxTopics), WSNoCompression: !c.wsCompression,
		AllowedOrigins: c.allowedOrigins, CORSOrigins: c.corsOrigins,
		MaxConns: noLimit(c.maxConns), MaxConnsPerIP: c.maxConnsPerIP, RatePublish: c.ratePublish, RateActions: c.rateActions,
		Auth: c.authMode, JWTSecret: c.jwtSecret, JWTPublicKey: c.jwtPublicKey, JWTJWKSURL: c.jwtJWKSURL, JWTAudience: c.jwtAudience, JWTIssuer: c.jwtIssuer,
		JWTLeeway:       noLimit(c.jwtLeeway),
		PublicSubscribe: c.publicSubscribe, APIKey: c.apiKey,
		AuthUpstream: c.authUpstream, AuthUpstreamTimeout: noDefault(c.authUpstreamTO),
		ShutdownTimeout: noDefault(c.shutdownTimeout),
		ActionUpstreams: upstreams, ActionWorkers: noDefault(c.actionWorkers), ActionQueue: noDefault(c.actionQueue),
		ActionTTL: noDefault(c.actionTTL), ActionLease: c.actionLease,
		ActionMaxFinished: noDefault(c.actionMaxFinished), ActionMaxBytes: noDefault(c.actionMaxBytes),
		ActionTimeout: noDefault(c.actionTimeout), ActionMaxAttempts: noDefault(c.actionMaxAttempts),
		Sources: c.sources,
		Logger:  log, Version: buildVersion(),
	}
}

// noLimit turns a flag's 0, no limit, into the Config's negative.
func noLimit[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// noDefault turns the 0 of a flag that must be positive into a value that
// Validate refuses: the Config would take its 0 for the default.
func noDefault[T int | int64 | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
