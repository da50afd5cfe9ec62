package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
	"github.com/heraldpush/herald/metrics"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
	"github.com/heraldpush/herald/web"
)

// Timeouts of the HTTP server. There is deliberately no WriteTimeout: SSE
// streams and WebSocket connections live for hours, and their transports set
// a deadline on each write instead. Nor is there a ReadTimeout: request
// bodies get --read-timeout per request (httpapi.Config.ReadTimeout).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	// hubCloseGrace is how long the hub may take to stop when the shutdown
	// timeout has already passed.
	hubCloseGrace = time.Second
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
	queueBytes      int
	shards          int
	heartbeat       time.Duration
	sseRetry        time.Duration
	writeTimeout    time.Duration
	readTimeout     time.Duration
	maxBody         int64
	wsReadLimit     int64
	wsPingInterval  time.Duration
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
	jwtAudience     string
	jwtIssuer       string
	publicSubscribe []hub.Pattern
	apiKey          string
	shutdownTimeout time.Duration
	logLevel        slog.Level
	logFormat       string

	actionUpstream    []upstreamRoute // from --action-upstream, in the order given
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
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.String(configFlag, "", "YAML `file` of flag values, e.g. history-size: 20000 (see docs/operations.md); the environment and the command line override it")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "`address` to listen on (host:port; port 0 picks a free one)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "`address` of an internal listener for GET /metrics (and --pprof); empty: /metrics is served on --addr")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiles under /debug/pprof/ (and POST /debug/free-memory) on --metrics-addr, never on --addr")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` with the server's certificate (and its chain): serve HTTPS, with HTTP/2 for browsers (needs --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.BoolVar(&c.h2c, "h2c", false, "also accept HTTP/2 without TLS (prior knowledge), for a proxy that speaks h2c to Herald; HTTP/1.1 still works on the same port")
	fs.StringVar(&c.broker, "broker", "memory", "event broker: memory (one node); for a cluster of nodes sharing one log, redis://[:password@]host:6379/0[?prefix=herald] or nats://[user:password@]host:4222[,host:4222…][?stream=HERALD&subjects=herald.ev&replicas=1&storage=file]")
	fs.IntVar(&c.historySize, "history-size", 10000, "events retained for replay and history, at most")
	fs.IntVar(&c.historyBytes, "history-bytes", hub.DefaultHistoryBytes, "bound of the retained events' size, in bytes; the oldest go first (redis:// bounds the events' fields, nats:// the stream's MaxBytes)")
	fs.DurationVar(&c.historyTTL, "history-ttl", time.Hour, "events older than this are dropped from history (0: no age limit)")
	fs.IntVar(&c.queueBytes, "queue-bytes", 512<<10, "outbound queue bound per connection, in bytes; a client that overflows it is disconnected as a slow consumer")
	fs.IntVar(&c.shards, "shards", 0, "hub shards (0: GOMAXPROCS)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "interval of SSE \": ping\" comment lines")
	fs.DurationVar(&c.sseRetry, "sse-retry", 2*time.Second, "reconnect delay suggested to SSE clients (the retry: line)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "deadline for each write to an SSE or WebSocket client; missing it disconnects the client")
	fs.DurationVar(&c.readTimeout, "read-timeout", httpapi.DefaultReadTimeout, "how long a request body may take to arrive once its headers have; past it: 408 and the connection closed (streams are not affected)")
	fs.Int64Var(&c.maxBody, "max-body", httpapi.DefaultMaxBody, "largest HTTP request body, in bytes")
	fs.Int64Var(&c.wsReadLimit, "ws-read-limit", 64<<10, "largest WebSocket message from a client, in bytes (larger: close 1009)")
	fs.DurationVar(&c.wsPingInterval, "ws-ping-interval", 25*time.Second, "interval of WebSocket keep-alive pings")
	fs.Var(&origins, "allowed-origins", "comma-separated Origin `patterns` allowed to open WebSockets, e.g. app.example.com,*.example.org (empty: same host only); those without a wildcard may also use the herald_token cookie")
	fs.Var(&corsOrigins, "cors-origins", "comma-separated `origins` whose pages may use the API, the SSE stream and /herald.js, e.g. https://app.example.com,https://*.example.org, or * for any; they may open WebSockets too; only those named exactly get credentials (the herald_token cookie) (empty: no cross-origin access)")
	fs.IntVar(&c.maxConns, "max-conns", 100000, "open SSE streams and WebSockets at most, in all; more get 503 (0: no limit)")
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", 0, "open streams and WebSockets at most from one client address; more get 429 (0: no limit; behind a proxy every client has the proxy's address)")
	fs.Float64Var(&c.ratePublish, "rate-publish", 0, "events a caller (token subject, else address) may publish per second, over HTTP and WebSocket, in bursts of as many; more get 429 (0: no limit)")
	fs.Float64Var(&c.rateActions, "rate-actions", 0, "actions a caller may submit per second, in bursts of as many; more get 429 (0: no limit)")
	fs.Float64Var(&c.wsMessageRate, "ws-message-rate", ws.DefaultMessageRate, "messages one WebSocket may send per second (bursts of 1000); a flood closes it with 4029 (negative: no limit)")
	fs.IntVar(&c.wsMaxTopics, "ws-max-topics", ws.DefaultMaxTopics, "patterns one WebSocket may hold at once")
	fs.StringVar(&c.authMode, "auth", "none", "authentication: none (anyone may do anything) or jwt (a token with grants; see docs/security.md)")
	fs.StringVar(&c.jwtSecret, "jwt-secret", "", "HS256 secret that signs tokens, at least 32 bytes (--auth jwt)")
	fs.StringVar(&c.jwtPublicKey, "jwt-public-key", "", "PEM `file` with the RSA (RS256) or ECDSA P-256 (ES256) public key that verifies tokens (--auth jwt)")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "if set, tokens must carry this aud (--auth jwt)")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "if set, tokens must carry this iss (--auth jwt)")
	fs.Var(&public, "public-subscribe", "comma-separated `patterns` anyone may subscribe to without a token, e.g. news.> (--auth jwt)")
	fs.StringVar(&c.apiKey, "api-key", "", "secret that lets a server publish to any topic and read /v1/stats with the X-API-Key header instead of a token (--auth jwt)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take before connections are cut")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error (debug logs every request)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.Var(&upstream, "action-upstream", "HTTP backend that runs actions: a `URL` for every action type, or a comma-separated list of TYPE=URL (TYPE exact, or a prefix ending in . or *) with at most one bare URL as the fallback, e.g. billing.=http://billing/actions,http://app/actions (empty: only the built-in echo type)")
	fs.IntVar(&c.actionWorkers, "action-workers", 16, "actions run at once")
	fs.IntVar(&c.actionQueue, "action-queue", 10000, "accepted actions waiting for a worker, at most; when full, new actions get 503 with Retry-After")
	fs.DurationVar(&c.actionTTL, "action-ttl", time.Hour, "how long a finished action's status (and its idempotency key) is kept")
	fs.DurationVar(&c.actionLease, "action-lease", action.DefaultLease, "with a shared broker: how long a node keeps an action it runs without renewing it; another node takes over the actions of a node that died after this")
	fs.IntVar(&c.actionMaxFinished, "action-max-finished", 100000, "finished actions kept at most, whatever their age; the oldest are forgotten first")
	fs.IntVar(&c.actionMaxBytes, "action-max-bytes", action.DefaultMaxFinishedBytes, "bound of the finished actions' records kept on this node (results, errors, keys), in bytes; the oldest are forgotten first (not with a shared broker: its records expire after --action-ttl)")
	fs.DurationVar(&c.actionTimeout, "action-timeout", 10*time.Second, "deadline of each attempt at an upstream action")
	fs.IntVar(&c.actionMaxAttempts, "action-max-attempts", 5, "attempts at an action whose upstream fails transiently (5xx, timeout, connection error)")
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
	case !knownBroker(c.broker):
		return usagef("--broker %s is not supported (memory, redis://…, rediss://…, nats://… or tls://…)", c.broker)
	case c.addr == "":
		return usagef("--addr must not be empty")
	case c.pprof && c.metricsAddr == "":
		return usagef("--pprof needs --metrics-addr: profiles are served on the internal listener only")
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return usagef("--tls-cert and --tls-key go together: give both or neither")
	case c.h2c && c.tlsCert != "":
		return usagef("--h2c is HTTP/2 without TLS; with --tls-cert the server speaks HTTP/2 over TLS already")
	case c.historySize <= 0:
		return usagef("--history-size must be positive, got %d", c.historySize)
	case c.historyBytes <= 0:
		return usagef("--history-bytes must be positive, got %d", c.historyBytes)
	case int64(c.historyBytes) < c.maxBody:
		// A smaller bound could not retain the largest event a client may
		// publish (and NATS would refuse to store it).
		return usagef("--history-bytes (%d) must be at least --max-body (%d)", c.historyBytes, c.maxBody)
	case c.historyTTL < 0:
		return usagef("--history-ttl must not be negative, got %v", c.historyTTL)
	case c.queueBytes <= 0:
		return usagef("--queue-bytes must be positive, got %d", c.queueBytes)
	case c.shards < 0:
		return usagef("--shards must not be negative, got %d", c.shards)
	case c.heartbeat <= 0:
		return usagef("--heartbeat must be positive, got %v", c.heartbeat)
	case c.sseRetry <= 0:
		return usagef("--sse-retry must be positive, got %v", c.sseRetry)
	case c.writeTimeout <= 0:
		return usagef("--write-timeout must be positive, got %v", c.writeTimeout)
	case c.readTimeout <= 0:
		return usagef("--read-timeout must be positive, got %v", c.readTimeout)
	case c.maxBody <= 0:
		return usagef("--max-body must be positive, got %d", c.maxBody)
	case c.wsReadLimit <= 0:
		return usagef("--ws-read-limit must be positive, got %d", c.wsReadLimit)
	case c.wsPingInterval <= 0:
		return usagef("--ws-ping-interval must be positive, got %v", c.wsPingInterval)
	case c.shutdownTimeout <= 0:
		return usagef("--shutdown-timeout must be positive, got %v", c.shutdownTimeout)
	case c.logFormat != "text" && c.logFormat != "json":
		return usagef("--log-format must be text or json, got %q", c.logFormat)
	case c.actionWorkers <= 0:
		return usagef("--action-workers must be positive, got %d", c.actionWorkers)
	case c.actionQueue <= 0:
		return usagef("--action-queue must be positive, got %d", c.actionQueue)
	case c.actionLease < 300*time.Millisecond:
		return usagef("--action-lease must be at least 300ms, got %v", c.actionLease)
	case c.actionTTL <= 0:
		return usagef("--action-ttl must be positive, got %v", c.actionTTL)
	case c.actionMaxFinished <= 0:
		return usagef("--action-max-finished must be positive, got %d", c.actionMaxFinished)
	case c.actionMaxBytes <= 0:
		return usagef("--action-max-bytes must be positive, got %d", c.actionMaxBytes)
	case c.actionTimeout <= 0:
		return usagef("--action-timeout must be positive, got %v", c.actionTimeout)
	case c.actionMaxAttempts <= 0:
		return usagef("--action-max-attempts must be positive, got %d", c.actionMaxAttempts)
	case c.maxConns < 0 || c.maxConnsPerIP < 0:
		return usagef("--max-conns and --max-conns-per-ip must not be negative")
	case c.ratePublish < 0 || c.rateActions < 0:
		return usagef("--rate-publish and --rate-actions must not be negative")
	case c.wsMaxTopics <= 0:
		return usagef("--ws-max-topics must be positive, got %d", c.wsMaxTopics)
	case c.authMode != "none" && c.authMode != "jwt":
		return usagef("--auth must be none or jwt, got %q", c.authMode)
	case c.authMode == "jwt" && c.jwtSecret == "" && c.jwtPublicKey == "":
		return usagef("--auth jwt needs --jwt-secret or --jwt-public-key")
	case c.authMode == "none" && (c.jwtSecret != "" || c.jwtPublicKey != "" || c.jwtAudience != "" ||
		c.jwtIssuer != "" || len(c.publicSubscribe) > 0 || c.apiKey != ""):
		return usagef("the --jwt-*, --public-subscribe and --api-key flags need --auth jwt")
	}
	return nil
}

// newActions starts the action service: on the shared store when the
// broker has one (the actions of every node), else in memory.
func (c *serveConfig) newActions(h *hub.Hub, store action.Store, observe func(action.Status, time.Duration), log *slog.Logger) (action.Runner, error) {
	if store != nil {
		return action.NewShared(action.SharedOptions{
			Hub: h, Store: store, Workers: c.actionWorkers, QueueSize: c.actionQueue, TTL: c.actionTTL,
			MaxAttempts: c.actionMaxAttempts, Lease: c.actionLease, Echo: true, Logger: log, ObserveDuration: observe,
		})
	}
	return action.New(action.Options{
		Hub: h, Workers: c.actionWorkers, QueueSize: c.actionQueue, TTL: c.actionTTL, MaxFinished: c.actionMaxFinished, MaxFinishedBytes: c.actionMaxBytes,
		MaxAttempts: c.actionMaxAttempts, Echo: true, Logger: log, ObserveDuration: observe,
	})
}

// authenticator builds the token verifier of --auth jwt (nil for none).
func (c *serveConfig) authenticator() (*auth.Authenticator, error) {
	if c.authMode != "jwt" {
		return nil, nil
	}
	cfg := auth.Config{
		Secret: []byte(c.jwtSecret), Audience: c.jwtAudience, Issuer: c.jwtIssuer,
		PublicSubscribe: c.publicSubscribe, APIKey: c.apiKey,
		// The pages that may open WebSockets or use the API: those named
		// exactly may also authenticate with the herald_token cookie.
		CookieOrigins: c.allowedOrigins,
	}
	if c.jwtPublicKey != "" {
		pemBytes, err := os.ReadFile(c.jwtPublicKey)
		if err != nil {
			return nil, usagef("--jwt-public-key: %v", err)
		}
		if k, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes); err == nil {
			cfg.PublicKey = k
		} else if k, err := jwt.ParseECPublicKeyFromPEM(pemBytes); err == nil {
			cfg.PublicKey = k
		} else {
			return nil, usagef("--jwt-public-key: %s holds no PEM RSA or ECDSA public key", c.jwtPublicKey)
		}
	}
	a, err := auth.New(cfg)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return a, nil
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
// accepts connections.
//
// It returns a *usageError for a bad command line, flag.ErrHelp after -h,
// and nil after a shutdown asked for through ctx (even one that had to cut
// connections when the timeout passed; that is logged).
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) error {
	cfg, err := parseServeFlags(args, os.LookupEnv, stdout)
	if err != nil {
		return err
	}
	log := cfg.logger(stderr)
	authn, err := cfg.authenticator()
	if err != nil {
		return err
	}
	// Like the upstreams below, the certificate is loaded before anything
	// starts: one that cannot be used is a usage error, not a server that
	// fails every handshake.
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	if err := cfg.checkHTTP2(os.Getenv("GODEBUG")); err != nil {
		return err
	}

	// Upstreams are built before anything starts, so a URL they refuse is a
	// usage error with nothing to clean up.
	upstreams := make([]*action.Upstream, len(cfg.actionUpstream))
	for i, r := range cfg.actionUpstream {
		u, err := action.NewUpstream(action.UpstreamOptions{
			URL: r.url, Timeout: cfg.actionTimeout, MaxIdleConns: cfg.actionWorkers, Logger: log,
		})
		if err != nil {
			return usagef("--action-upstream %s: %v", r.url, err)
		}
		upstreams[i] = u
	}
	// After the shutdown nothing calls an upstream any more: free the
	// keep-alive connections (and their goroutines).
	defer func() {
		for _, u := range upstreams {
			u.CloseIdleConnections()
		}
	}()

	broker, store, closeBroker, err := cfg.newBroker(log)
	if err != nil {
		return err
	}
	defer closeBroker()
	m := metrics.New(buildVersion())
	h, err := hub.New(hub.Options{
		Broker:         broker,
		Shards:         cfg.shards,
		QueueBytes:     cfg.queueBytes,
		Logger:         log,
		ObserveLatency: m.ObserveLatency,
	})
	if err != nil {
		return fmt.Errorf("failed to start hub: %w", err)
	}
	svc, err := cfg.newActions(h, store, m.ObserveAction, log)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		_ = h.Close(cctx)
		return fmt.Errorf("failed to start actions: %w", err)
	}
	for i, r := range cfg.actionUpstream {
		svc.Handle(r.typ, upstreams[i])
	}
	m.Attach(h, svc)
	var publicMetrics http.Handler // /metrics on --addr, unless --metrics-addr takes it
	if cfg.metricsAddr == "" {
		publicMetrics = m.Handler()
	}
	conns := limit.NewConns(cfg.maxConns, cfg.maxConnsPerIP)
	publishRates := limit.NewRates(cfg.ratePublish, 0)
	actionRates := limit.NewRates(cfg.rateActions, 0)
	sseH := sse.New(sse.Options{
		Hub: h, Heartbeat: cfg.heartbeat, Retry: cfg.sseRetry, WriteTimeout: cfg.writeTimeout, Auth: authn, Conns: conns, Logger: log,
	})
	wsH := ws.New(ws.Options{
		Hub: h, AllowedOrigins: cfg.allowedOrigins, ReadLimit: cfg.wsReadLimit,
		PingInterval: cfg.wsPingInterval, WriteTimeout: cfg.writeTimeout, Actions: svc, Auth: authn, Conns: conns,
		PublishRates: publishRates, ActionRates: actionRates, MessageRate: cfg.wsMessageRate, MaxTopics: cfg.wsMaxTopics, Logger: log,
	})
	srv := &http.Server{
		Handler: httpapi.NewRouter(httpapi.Config{
			Hub: h, SSE: sseH, WS: wsH, Actions: svc, MaxBody: cfg.maxBody, ReadTimeout: cfg.readTimeout, Logger: log,
			Client: web.JS(), Dashboard: web.Dashboard(), DashboardPaths: web.DashboardPaths,
			CORSOrigins: cfg.corsOrigins, Auth: authn, PublishRates: publishRates, ActionRates: actionRates,
			Metrics: publicMetrics, ObserveRequest: m.ObserveRequest,
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         cfg.protocols(),
		TLSConfig:         tlsConfig,
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		_ = svc.Shutdown(cctx)
		_ = h.Close(cctx)
		return fmt.Errorf("failed to listen on %s: %w", cfg.addr, err)
	}
	if cfg.metricsAddr != "" {
		dbg, err := startInternal(cfg.metricsAddr, m.Handler(), cfg.pprof, log)
		if err != nil {
			_ = ln.Close()
			cctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
			defer cancel()
			_ = svc.Shutdown(cctx)
			_ = h.Close(cctx)
			return err
		}
		defer dbg.stop()
	}
	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			// ServeTLS offers h2 and http/1.1 by ALPN, as srv.Protocols says.
			served <- srv.ServeTLS(ln, "", "")
			return
		}
		served <- srv.Serve(ln)
	}()
	log.Info("listening", "addr", ln.Addr().String(), "scheme", cfg.scheme(), "protocols", cfg.protocolNames(),
		"broker", redactBroker(cfg.broker), "auth", cfg.authMode, "version", buildVersion())
	if authn == nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			log.Warn("AUTHENTICATION IS OFF on an address other machines can reach: anyone may subscribe to, " +
				"publish to and run actions on any topic. Use --auth jwt, or listen on 127.0.0.1.")
		}
	}
	for _, r := range cfg.actionUpstream {
		typ := r.typ
		if typ == "" {
			typ = "(every other type)"
		}
		log.Info("action upstream", "type", typ, "url", r.url)
	}
	if ready != nil {
		ready(ln.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.shutdownTimeout.String())
	case serveErr = <-served:
		log.Error("server stopped accepting connections", "err", serveErr)
		served <- serveErr // so the wait below does not block
	}
	shutdown(srv, h, sseH, wsH, svc, cfg.shutdownTimeout, log)
	if err := <-served; serveErr == nil && !errors.Is(err, http.ErrServerClosed) {
		serveErr = err
	}
	if serveErr != nil {
		return fmt.Errorf("failed to serve: %w", serveErr)
	}
	// What the node did in its life, from counters that are final now: a
	// drain can be checked against what clients were answered (every
	// accepted action finished, and its result among the events).
	hs, as := h.Stats(), svc.Stats()
	log.Info("stopped", "events_published", hs.Published, "publish_errors", hs.PublishErrors,
		"actions_accepted", as.Accepted, "actions_succeeded", as.Succeeded, "actions_failed", as.Failed)
	return nil
}

// shutdown stops the server in the order that lets every connection end
// cleanly, and returns within timeout even if something hangs:
//
//  1. h.Shutdown fails every hub client with ErrGoingAway, so SSE streams
//     end (http.Server.Shutdown would otherwise wait for them forever) and
//     WebSocket connections close with 1001. Publishing still works.
//  2. srv.Shutdown closes the listener and lets in-flight requests
//     (publishes among them) finish. SSE streams over HTTP/2 are such
//     requests, as HTTP/2 cannot be hijacked: they have ended in step 1,
//     and each HTTP/2 connection gets a GOAWAY and closes.
//  3. sseH.Wait and wsH.Wait wait for the hijacked SSE streams and
//     WebSocket connections (HTTP/1.1, with or without TLS), which
//     http.Server does not track.
//  4. svc.Shutdown refuses new actions (nothing can submit one any more)
//     and lets the accepted ones finish and publish their results, which
//     needs the hub still open; what has not finished when the timeout
//     passes fails with code "shutdown".
//  5. h.Close stops the hub's goroutines and the broker.
//
// When the timeout passes, srv.Close cuts every remaining connection.
func shutdown(srv *http.Server, h *hub.Hub, sseH *sse.Handler, wsH *ws.Handler, svc action.Runner, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h.Shutdown()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("cutting HTTP connections that did not finish in time", "err", err)
		_ = srv.Close()
	}
	if err := sseH.Wait(ctx); err != nil {
		log.Warn("SSE streams did not end in time", "err", err)
	}
	if err := wsH.Wait(ctx); err != nil {
		log.Warn("WebSocket connections did not close in time", "err", err)
	}
	if err := svc.Shutdown(ctx); err != nil {
		log.Warn("actions did not finish in time; the unfinished ones failed with code shutdown", "err", err)
	}
	// The hub's goroutines stop within moments. When slow actions have
	// spent the whole bound, they still get that moment, rather than being
	// reported as hung and left running.
	hctx := ctx
	if ctx.Err() != nil {
		var hcancel context.CancelFunc
		hctx, hcancel = context.WithTimeout(context.Background(), hubCloseGrace)
		defer hcancel()
	}
	if err := h.Close(hctx); err != nil {
		log.Warn("hub did not stop in time", "err", err)
	}
}
