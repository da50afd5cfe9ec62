// Package httpapi serves Herald's HTTP JSON API (publish, actions, history,
// topics, health) and mounts the SSE and WebSocket handlers beside it.
//
// routes.go is the only file that knows about the router (gorilla/mux), so
// moving to another router touches this file alone.
package httpapi

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
)

// Defaults of Config.
const (
	DefaultMaxBody      int64 = 1 << 20
	DefaultMaxBatch           = 1000
	DefaultReadTimeout        = 30 * time.Second
	DefaultWriteTimeout       = 10 * time.Second
)

// Config configures the handler returned by NewRouter.
type Config struct {
	Hub *hub.Hub
	// SSE serves GET /v1/events and WS serves GET /v1/ws; a nil handler
	// leaves its route unmounted (404).
	SSE http.Handler
	WS  http.Handler
	// Actions serves POST /v1/actions and GET /v1/actions/{id}. Nil means
	// actions are disabled: both paths answer 404 not_found, as any path
	// the server does not serve.
	Actions action.Runner
	// MaxBody bounds a request body in bytes; larger bodies get 413
	// too_large. Default 1 MiB.
	MaxBody int64
	// MaxBatch bounds the events of one batch publish; more get 413
	// too_large. Default 1000.
	MaxBatch int
	// ReadTimeout bounds how long a request body may take to arrive,
	// from the end of its headers; past it the request is answered 408
	// request_timeout and its connection closed. Requests without a body,
	// the SSE stream and the WebSocket handshake among them, are not
	// affected. Default 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of a response that is not a stream:
	// each write gets between half of it and all of it, a large body
	// being written in parts (writeChunk), so a client that stops reading
	// holds its connection, its handler and the response for that long at
	// most. The SSE stream and the WebSocket set their own deadlines.
	// Default 10 s.
	WriteTimeout time.Duration
	// Client serves GET /herald.js and Dashboard serves DashboardPaths
	// (package web); nil leaves the routes unmounted.
	Client         http.Handler
	Dashboard      http.Handler
	DashboardPaths []string
	// CORSOrigins, if not empty, lets pages from these origins use the API,
	// the SSE stream and /herald.js: full origins (https://app.example.com),
	// one wildcard (https://*.example.com), or "*" for any. See
	// docs/protocol.md, "Cross-origin pages".
	CORSOrigins []string
	// PublishRates and ActionRates, if set, limit the events published and
	// the actions submitted per caller (token subject, else client IP),
	// shared with the WebSocket ops; over it: 429 rate_limited.
	PublishRates *limit.Rates
	ActionRates  *limit.Rates
	// Auth, if set, authenticates every API request and checks its grants
	// (package auth). Nil: no authentication, everything allowed.
	Auth *auth.Authenticator
	// Logger receives access logs (Debug) and recovered panics (Error);
	// nil means slog.Default().
	Logger *slog.Logger
	// Metrics, if set, serves GET /metrics (package metrics).
	Metrics http.Handler
	// ObserveRequest, if set, is called as each request ends with its
	// route's pattern ("" when no route matched), its status and its
	// duration. It must be safe for concurrent use.
	ObserveRequest func(route string, code int, d time.Duration)
	// Sources, if set, reports the event sources for GET /readyz.
	Sources func() []SourceStatus
}

// NewRouter returns the handler for every route of Herald's HTTP surface.
// It is safe for concurrent use.
//
// Paths are matched exactly as sent (SkipClean): "//v1/publish" is a 404,
// not a 301 that clients would follow with a GET, losing the body.
func NewRouter(cfg Config) http.Handler {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &api{hub: cfg.Hub, actions: cfg.Actions, maxBody: cfg.MaxBody, maxBatch: cfg.MaxBatch, readTimeout: cfg.ReadTimeout, auth: cfg.Auth,
		publishRates: cfg.PublishRates, actionRates: cfg.ActionRates, sources: cfg.Sources}
	r := mux.NewRouter().SkipClean(true)
	rt := &router{mux: r, static: map[string]http.Handler{}}
	if cfg.SSE != nil {
		rt.handleStream("/v1/events", cfg.SSE)
	}
	if cfg.WS != nil {
		rt.handleStream("/v1/ws", cfg.WS)
	}
	rt.handle("/v1/publish", http.HandlerFunc(a.publish), http.MethodPost)
	if cfg.Actions != nil {
		rt.handle(actionsPath, http.HandlerFunc(a.submitAction), http.MethodPost)
		rt.handle(actionsPath+"/{id}", http.HandlerFunc(a.getAction), http.MethodGet)
	}
	rt.handle("/v1/topics", http.HandlerFunc(a.topics), http.MethodGet)
	// The default variable pattern [^/]+ admits dots; the handler validates
	// the topic so that a bad one is a 400 invalid_topic rather than a 404.
	rt.handle("/v1/topics/{topic}/history", http.HandlerFunc(a.history), http.MethodGet)
	rt.handle("/v1/topics/{topic}/state", http.HandlerFunc(a.state), http.MethodGet)
	rt.handle("/v1/topics/{topic}/presence", http.HandlerFunc(a.presence), http.MethodGet)
	rt.handle("/v1/stats", http.HandlerFunc(a.stats), http.MethodGet)
	rt.handle(disconnectPath, a.control(hub.ControlDisconnect), http.MethodPost)
	rt.handle(unsubscribePath, a.control(hub.ControlUnsubscribe), http.MethodPost)
	if cfg.Client != nil {
		rt.handle("/herald.js", cfg.Client, http.MethodGet, http.MethodHead)
	}
	if cfg.Dashboard != nil {
		for _, p := range cfg.DashboardPaths {
			rt.handle(p, cfg.Dashboard, http.MethodGet, http.MethodHead)
		}
	}
	rt.handle("/healthz", http.HandlerFunc(a.healthz), http.MethodGet, http.MethodHead)
	rt.handle("/readyz", http.HandlerFunc(a.readyz), http.MethodGet, http.MethodHead)
	if cfg.Metrics != nil {
		rt.handle("/metrics", cfg.Metrics, http.MethodGet)
	}

	r.NotFoundHandler = http.HandlerFunc(notFound)
	r.MethodNotAllowedHandler = methodNotAllowed(r)

	// mux's own middleware (r.Use) does not run for 404 and 405, so the
	// outer layers wrap the router itself.
	h := withReadableQuery(rt)
	if len(cfg.CORSOrigins) > 0 {
		h = withCORS(cfg.CORSOrigins, h)
	}
	return withAccessLog(cfg.Logger, cfg.ObserveRequest, withDeadlines(cfg.ReadTimeout, cfg.WriteTimeout, h))
}

// router dispatches the routes without path variables with one map lookup
// and leaves the rest, and every 404 and 405, to mux. mux tries each
// route's regular expression in turn and copies the Request to carry its
// match in the context: about nine allocations, which on the publish path
// were a quarter of all of them. Every route is registered with mux as
// well, so that a 405's Allow header knows it.
type router struct {
	mux    *mux.Router
	static map[string]http.Handler // by "METHOD /path"; read-only once built
}

func (rt *router) handle(path string, h http.Handler, methods ...string) {
	rt.add(path, routed{route: path, next: h}, methods)
}

// handleStream adds a GET route that serves a stream, which sets its own
// write deadlines (Config.WriteTimeout).
func (rt *router) handleStream(path string, h http.Handler) {
	rt.add(path, routed{route: path, next: h, stream: true}, []string{http.MethodGet})
}

func (rt *router) add(path string, h routed, methods []string) {
	rt.mux.Handle(path, h).Methods(methods...)
	if !strings.Contains(path, "{") {
		for _, m := range methods {
			rt.static[m+" "+path] = h
		}
	}
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := rt.static[r.Method+" "+r.URL.Path]; ok {
		h.ServeHTTP(w, r)
		return
	}
	rt.mux.ServeHTTP(w, r)
}

// routed notes its route's pattern in the request's recorder, for the
// metrics: a label from the pattern, never from the path, stays bounded.
type routed struct {
	route  string
	next   http.Handler
	stream bool // the handler sets its own write deadlines
}

func (rh routed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rec, ok := w.(*recorder); ok {
		rec.route = rh.route
		if rh.stream {
			rec.timeout = 0
		}
	}
	rh.next.ServeHTTP(w, r)
}

// pathVar returns the value of a {name} in the route's path.
func pathVar(r *http.Request, name string) string { return mux.Vars(r)[name] }

func notFound(w http.ResponseWriter, r *http.Request) {
	apierror.Write(w, apierror.New(http.StatusNotFound, apierror.NotFound, "no route for "+r.URL.Path))
}

// candidateMethods are tried against the router to fill the Allow header.
var candidateMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// methodNotAllowed answers 405 with the methods the path does accept, found
// by asking the router whether the same request with another method would
// match a route.
func methodNotAllowed(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range candidateMethods {
			probe := r.Clone(r.Context())
			probe.Method = m
			var match mux.RouteMatch
			if router.Match(probe, &match) && match.MatchErr == nil {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
		}
		apierror.Write(w, apierror.New(http.StatusMethodNotAllowed, apierror.MethodNotAllowed,
			r.Method+" is not allowed on "+r.URL.Path))
	})
}
