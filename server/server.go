package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
	"github.com/heraldpush/herald/metrics"
	"github.com/heraldpush/herald/outbox"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
	"github.com/heraldpush/herald/web"
)

// Timeouts of the HTTP server. There is deliberately no WriteTimeout: SSE
// streams and WebSocket connections live for hours, and their transports set
// a deadline on each write instead. Nor is there a ReadTimeout: request
// bodies get Config.ReadTimeout per request (httpapi.Config.ReadTimeout).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	// hubCloseGrace is how long the hub may take to stop when the shutdown
	// context has already ended.
	hubCloseGrace = time.Second
)

// Server is a running Herald node. New starts it listening; Serve accepts
// connections; Shutdown stops it. Serve and Shutdown may be called from
// different goroutines; Shutdown may be called more than once and every
// call returns once the node has stopped.
type Server struct {
	cfg       Config
	log       *slog.Logger
	ln        net.Listener
	http      *http.Server
	tls       *tls.Config
	hub       *hub.Hub
	actions   action.Runner
	sse       *sse.Handler
	ws        *ws.Handler
	internal  *internalServer // nil without MetricsAddr
	upstreams []*action.Upstream
	release   func() // the broker's connections
	stopJWKS  func() // ends the JWKS refresh (see auth.JWKS.Start)
	// stopAuthUpstream ends the auth upstream's calls and connections.
	stopAuthUpstream func()
	sources          []*outbox.Source
	// stopSources ends the sources' Run and waits for it.
	stopSources func()

	serving      atomic.Bool // set by the first Serve
	served       chan error  // the result of http.Server.Serve, once Serve ran
	started      chan struct{}
	shutdownOnce sync.Once
	stopped      chan struct{} // closed when Shutdown has finished
	shutdownErr  error         // set before stopped is closed
}

// New checks cfg, connects the broker (and fetches the JWKS of
// JWTJWKSURL), builds every component and listens on cfg.Addr (and
// cfg.MetricsAddr), so that Addr is known before Serve. A Config it refuses
// returns a *ConfigError, with nothing started.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	authn, jwks, authUpstream, err := cfg.authenticator()
	if err != nil {
		return nil, err
	}
	// Until the server owns it, every return below closes the auth
	// upstream.
	stopAuthUpstream := func() {}
	if authUpstream != nil {
		stopAuthUpstream = authUpstream.Close
	}
	owned := false
	defer func() {
		if !owned {
			stopAuthUpstream()
		}
	}()
	// Like the upstreams below, the certificate is loaded before anything
	// starts: one that cannot be used is a configuration error, not a
	// server that fails every handshake.
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if err := cfg.checkHTTP2(os.Getenv("GODEBUG")); err != nil {
		return nil, err
	}
	// Upstreams are built before anything starts, so a URL they refuse is a
	// configuration error with nothing to clean up.
	upstreams := make([]*action.Upstream, len(cfg.ActionUpstreams))
	for i, r := range cfg.ActionUpstreams {
		u, err := action.NewUpstream(action.UpstreamOptions{
			URL: r.URL, Timeout: cfg.ActionTimeout, MaxIdleConns: cfg.ActionWorkers, Logger: log,
		})
		if err != nil {
			return nil, configErrorf("--action-upstream %s: %v", r.URL, err)
		}
		upstreams[i] = u
	}
	// The JWKS is fetched (for at most its timeout) before the server
	// listens, so that tokens verify from the first request; one that
	// cannot be fetched now is not an error: tokens whose key is unknown
	// get 503 until it loads.
	stopJWKS := func() {}
	if jwks != nil {
		ctx, cancel := context.WithCancel(context.Background())
		if err := jwks.Start(ctx); err != nil {
			cancel()
			return nil, err
		}
		stopJWKS = cancel
	}
	s := &Server{
		cfg: cfg, log: log, tls: tlsConfig, upstreams: upstreams, release: func() {}, stopJWKS: stopJWKS,
		stopAuthUpstream: stopAuthUpstream,
		served:           make(chan error, 1), started: make(chan struct{}), stopped: make(chan struct{}),
	}
	if err := s.start(authn); err != nil {
		s.closeUpstreams()
		stopJWKS()
		return nil, err
	}
	owned = true
	return s, nil
}

// start connects the broker and builds and starts the components; on an
// error it stops what it started.
func (s *Server) start(authn *auth.Authenticator) error {
	cfg, log := &s.cfg, s.log
	broker, store, release, err := cfg.newBroker(log)
	if err != nil {
		return err
	}
	s.release = release
	m := metrics.New(cfg.Version)
	h, err := hub.New(hub.Options{
		Broker:         broker,
		Shards:         cfg.Shards,
		QueueBytes:     cfg.QueueBytes,
		TailBytes:      int64(cfg.TailBytes),
		NoDirectWrites: cfg.NoDirectWrites,
		TailEvents:     min(cfg.HistorySize, hub.DefaultTailEvents),
		Logger:         log,
		ObserveLatency: m.ObserveLatency,
	})
	if err != nil {
		release()
		return fmt.Errorf("failed to start hub: %w", err)
	}
	s.hub = h
	svc, err := cfg.newActions(h, store, m.ObserveAction, log)
	if err != nil {
		s.abort(false)
		return fmt.Errorf("failed to start actions: %w", err)
	}
	s.actions = svc
	for i, r := range cfg.ActionUpstreams {
		svc.Handle(r.Type, s.upstreams[i])
	}
	for typ, hd := range cfg.ActionHandlers {
		svc.Handle(typ, hd)
	}
	for _, u := range cfg.Sources {
		src, err := outbox.New(outbox.Options{URL: u, Publish: h.Publish, MaxData: int(cfg.MaxBody), Logger: log})
		if err != nil {
			s.abort(true)
			return fmt.Errorf("failed to start source %s: %w", outbox.Redact(u), err)
		}
		s.sources = append(s.sources, src)
	}
	m.Attach(h, svc, s.sources)
	var publicMetrics http.Handler // /metrics on Addr, unless MetricsAddr takes it
	if cfg.MetricsAddr == "" {
		publicMetrics = m.Handler()
	}
	conns := limit.NewConns(cfg.maxConns(), cfg.MaxConnsPerIP)
	publishRates := limit.NewRates(cfg.RatePublish, 0)
	actionRates := limit.NewRates(cfg.RateActions, 0)
	s.sse = sse.New(sse.Options{
		Hub: h, Heartbeat: cfg.Heartbeat, Retry: cfg.SSERetry, WriteTimeout: cfg.WriteTimeout, WriteLinger: cfg.WriteLinger, Auth: authn, Conns: conns, Logger: log,
	})
	s.ws = ws.New(ws.Options{
		Hub: h, AllowedOrigins: cfg.AllowedOrigins, ReadLimit: cfg.WSReadLimit,
		PingInterval: cfg.WSPingInterval, WriteTimeout: cfg.WriteTimeout, WriteLinger: cfg.WriteLinger, Actions: svc, Auth: authn, Conns: conns,
		PublishRates: publishRates, ActionRates: actionRates, MessageRate: cfg.WSMessageRate, MaxTopics: cfg.WSMaxTopics,
		NoCompression: cfg.WSNoCompression, Logger: log,
	})
	s.http = &http.Server{
		Handler: httpapi.NewRouter(httpapi.Config{
			Hub: h, SSE: s.sse, WS: s.ws, Actions: svc, MaxBody: cfg.MaxBody, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, Logger: log,
			Client: web.JS(), Dashboard: web.Dashboard(), DashboardPaths: web.DashboardPaths,
			CORSOrigins: cfg.CORSOrigins, Auth: authn, PublishRates: publishRates, ActionRates: actionRates,
			Metrics: publicMetrics, ObserveRequest: m.ObserveRequest, Sources: s.sourceStatus(),
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         cfg.protocols(),
		TLSConfig:         s.tls,
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.abort(true)
		return fmt.Errorf("failed to listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	if cfg.MetricsAddr != "" {
		s.internal, err = startInternal(cfg.MetricsAddr, m.Handler(), cfg.Pprof, log)
		if err != nil {
			_ = ln.Close()
			s.abort(true)
			return err
		}
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", cfg.scheme(), "protocols", cfg.protocolNames(),
		"broker", redactBroker(cfg.Broker), "auth", cfg.Auth, "version", cfg.Version)
	if authn == nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			log.Warn("AUTHENTICATION IS OFF on an address other machines can reach: anyone may subscribe to, " +
				"publish to and run actions on any topic. Use --auth jwt, or listen on 127.0.0.1.")
		}
	}
	s.stopSources = s.runSources()
	for _, r := range cfg.ActionUpstreams {
		typ := r.Type
		if typ == "" {
			typ = "(every other type)"
		}
		log.Info("action upstream", "type", typ, "url", r.URL)
	}
	return nil
}

// abort stops the hub (and the action service, if withActions) after a
// failed start, within ShutdownTimeout.
func (s *Server) abort(withActions bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if withActions {
		_ = s.actions.Shutdown(ctx)
	}
	_ = s.hub.Close(ctx)
	s.release()
}

// Addr returns the address the server listens on (host:port), with the
// port chosen when Config.Addr asked for port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections until ctx ends, then shuts the server down
// within Config.ShutdownTimeout, or until Shutdown is called; it returns
// once the server has stopped. It returns nil after such a shutdown (even
// one that had to cut connections; that is logged), and the error when the
// server stopped accepting connections for another reason. Serve may be
// called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("failed to serve: Serve was called twice")
	}
	select {
	case <-s.stopped:
		return s.shutdownErr
	default:
	}
	go func() {
		if s.tls != nil {
			// ServeTLS offers h2 and http/1.1 by ALPN, as Protocols says.
			s.served <- s.http.ServeTLS(s.ln, "", "")
			return
		}
		s.served <- s.http.Serve(s.ln)
	}()
	close(s.started)

	var serveErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	case serveErr = <-s.served:
		s.log.Error("server stopped accepting connections", "err", serveErr)
		s.served <- serveErr // for Shutdown, which waits for it
	case <-s.stopped:
		return s.shutdownErr
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}

// Shutdown stops the server in the order of the package doc and returns
// when it has stopped, at the latest soon after ctx ends (connections still
// open then are cut). It returns an error only if serving had failed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.shutdownErr = s.shutdown(ctx)
		close(s.stopped)
	})
	<-s.stopped
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	log := s.log
	// A source publishes nothing more: what it has not consumed waits in
	// its table for the next node.
	s.stopSources()
	s.hub.Shutdown()
	if err := s.http.Shutdown(ctx); err != nil {
		log.Warn("cutting HTTP connections that did not finish in time", "err", err)
		_ = s.http.Close()
	}
	if err := s.sse.Wait(ctx); err != nil {
		log.Warn("SSE streams did not end in time", "err", err)
	}
	if err := s.ws.Wait(ctx); err != nil {
		log.Warn("WebSocket connections did not close in time", "err", err)
	}
	if err := s.actions.Shutdown(ctx); err != nil {
		log.Warn("actions did not finish in time", "err", err)
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
	if err := s.hub.Close(hctx); err != nil {
		log.Warn("hub did not stop in time", "err", err)
	}

	var serveErr error
	select {
	case <-s.started:
		if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
			serveErr = fmt.Errorf("failed to serve: %w", err)
		}
	default:
		// Serve never ran: http.Server does not know the listener.
		_ = s.ln.Close()
	}
	if serveErr == nil {
		// What the node did in its life, from counters that are final now:
		// a drain can be checked against what clients were answered (every
		// accepted action finished, and its result among the events).
		hs, as := s.hub.Stats(), s.actions.Stats()
		log.Info("stopped", "events_published", hs.Published, "publish_errors", hs.PublishErrors,
			"actions_accepted", as.Accepted, "actions_succeeded", as.Succeeded, "actions_failed", as.Failed)
	}
	if s.internal != nil {
		s.internal.stop()
	}
	s.release()
	// Nothing calls an upstream any more: free the keep-alive connections
	// (and their goroutines).
	s.closeUpstreams()
	// No request verifies a token any more: end the JWKS refresh, and
	// the auth upstream's calls.
	s.stopJWKS()
	s.stopAuthUpstream()
	return serveErr
}

// runSources starts the sources and returns what stops them: it ends
// their Run and waits for it, which takes at most as long as a batch in
// flight (its publish is bounded).
func (s *Server) runSources() func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, src := range s.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = src.Run(ctx)
		}()
		s.log.Info("source", "source", src.Name())
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// sourceStatus reports the sources for /readyz; nil without any.
func (s *Server) sourceStatus() func() []httpapi.SourceStatus {
	if len(s.sources) == 0 {
		return nil
	}
	return func() []httpapi.SourceStatus {
		out := make([]httpapi.SourceStatus, len(s.sources))
		for i, src := range s.sources {
			st := src.Status()
			out[i] = httpapi.SourceStatus{Source: src.Name(), State: st.State}
			if st.State == outbox.StateUnavailable {
				out[i].Error = st.Err
			}
		}
		return out
	}
}

func (s *Server) closeUpstreams() {
	for _, u := range s.upstreams {
		u.CloseIdleConnections()
	}
}

// newActions starts the action service on the broker's store.
func (c *Config) newActions(h *hub.Hub, store action.Store, observe func(action.Status, time.Duration), log *slog.Logger) (action.Runner, error) {
	return action.New(action.Options{
		Hub: h, Store: store, Workers: c.ActionWorkers, QueueSize: c.ActionQueue, TTL: c.ActionTTL,
		MaxAttempts: c.ActionMaxAttempts, Lease: c.ActionLease, Echo: true, Logger: log, ObserveDuration: observe,
	})
}
