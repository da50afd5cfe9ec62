// Package ws serves the hub over WebSocket on GET /v1/ws.
//
// Each connection has one hub.Client, one writer goroutine that drains the
// client's queue and one reader goroutine that handles the client's
// messages (session.go). The writer coalesces every frame of a drained batch
// into a single write on the socket (cork.go): one write() per batch rather
// than one per frame is what lets a small box fan out to many connections.
// An idle connection holds no buffer beyond a few hundred bytes and one
// goroutine, the reader, on a minimal stack: the writer parks when it has
// nothing to do (session.go), and the reader waits for the next message on
// a fresh goroutine (read.go).
package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/tracker"
	"github.com/heraldpush/herald/limit"
)

// Subprotocol is the WebSocket subprotocol of the wire protocol. Clients that
// offer no subprotocol are accepted too.
const Subprotocol = "herald.v1"

// Defaults for the zero values of Options.
const (
	DefaultReadLimit    = 64 << 10
	DefaultPingInterval = 25 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Options configures a Handler.
type Options struct {
	Hub            *hub.Hub
	AllowedOrigins []string      // Origin patterns (coder/websocket OriginPatterns); empty: same host only
	ReadLimit      int64         // largest client message; default 64 KiB; a larger one closes with 1009
	PingInterval   time.Duration // keep-alive ping interval; default 25s; negative disables pings
	WriteTimeout   time.Duration // deadline for each batch write; default 10s; missing it closes with 4008
	WriteLinger    time.Duration // how long a writer woken soon after its last write waits for more before it writes (hub.WriterOptions.Linger); 0: none
	// Actions runs the "action" op; nil answers every action with an
	// unknown_action error. Share the Service with the HTTP API so that
	// idempotency keys are shared too.
	Actions action.Runner
	// Auth, if set, authenticates each connection at the handshake and
	// checks every subscribe, publish and action against its grants; a
	// bad token closes the connection with 1008 and so does its expiry,
	// unless a "refresh" op extends it; credentials that cannot be checked
	// (the JWKS or the auth upstream out of reach) close it with 1013.
	// Nil: no authentication.
	Auth *auth.Authenticator
	// Conns, if set, bounds open connections (shared with SSE streams):
	// over it, the handshake gets 503 unavailable or 429 rate_limited.
	Conns *limit.Conns
	// PublishRates and ActionRates, if set, limit the publish and action
	// ops per caller, in the same buckets as the HTTP API (limit.Key).
	PublishRates *limit.Rates
	ActionRates  *limit.Rates
	// MessageRate and MessageBurst bound the messages one connection may
	// send per second; a client that floods past them is closed with
	// 4029. Default 200/s with bursts of 1000; a negative rate disables it.
	MessageRate  float64
	MessageBurst int
	// MaxTopics bounds the patterns one connection holds at once; a
	// subscribe past it gets too_large. Default 256.
	MaxTopics int
	// NoCompression turns permessage-deflate off. By default it is
	// negotiated with every client that offers it, without context
	// takeover, and events of compressThreshold bytes or more go
	// compressed (deflate.go).
	NoCompression bool
	Logger        *slog.Logger
}

// Defaults of Options.
const (
	DefaultMessageRate  = 200
	DefaultMessageBurst = 1000
	DefaultMaxTopics    = 256
)

// Handler serves GET /v1/ws.
//
// ServeHTTP returns as soon as the connection is upgraded: the connection's
// goroutines are the Handler's, not net/http's, so that nothing of the HTTP
// server's per-request state (its 4 KiB read and write buffers among it) stays
// alive for the life of an idle connection. Wait waits for them.
type Handler struct {
	opts   Options
	accept websocket.AcceptOptions
	conns  tracker.Tracker
	// writer shapes every connection's writer (keep-alive pings, parking);
	// tests shorten its ParkAfter.
	writer hub.WriterOptions

	// Counters of the write path, read by tests to prove coalescing.
	frames atomic.Int64 // data frames handed to the connection
	writes atomic.Int64 // write calls made on sockets
}

// New returns a Handler. It panics if o.Hub is nil.
func New(o Options) *Handler {
	if o.Hub == nil {
		panic("ws: Options.Hub is nil")
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MessageRate == 0 {
		o.MessageRate = DefaultMessageRate
	}
	if o.MessageBurst <= 0 {
		o.MessageBurst = max(DefaultMessageBurst, int(o.MessageRate))
	}
	if o.MaxTopics <= 0 {
		o.MaxTopics = DefaultMaxTopics
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Handler{
		opts: o,
		// Every ping starts a parked writer: jittered, connections made
		// together (a reconnect storm, a load test) are not all pinged at once
		// ever after, which would hold thousands of writers at the same time.
		writer: hub.WriterOptions{KeepAlive: o.PingInterval, KeepAliveJitter: true, ParkAfter: parkAfter, Unsubscribed: unsubscribedFrame, Linger: o.WriteLinger},
		accept: websocket.AcceptOptions{
			Subprotocols:    []string{Subprotocol},
			OriginPatterns:  o.AllowedOrigins,
			CompressionMode: websocket.CompressionDisabled, // negotiated by ServeHTTP
		},
	}
}

// ServeHTTP implements http.Handler. A request that is not a valid WebSocket
// handshake, or comes from an origin that is not allowed, gets the protocol's
// JSON error; so does one that arrives while the hub is shutting down (503).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Counted from the start, so that Wait also covers a handshake in progress.
	h.conns.Add()
	client, err := h.opts.Hub.NewClient("ws")
	if err != nil {
		h.conns.Done()
		apierror.WriteErr(w, err)
		return
	}
	release, err := h.opts.Conns.Acquire(limit.ClientIP(r))
	if err != nil {
		h.conns.Done()
		client.Close()
		apierror.WriteErr(w, err)
		return
	}
	context.AfterFunc(client.Context(), release)
	p, authErr := auth.Everyone, error(nil)
	if h.opts.Auth != nil {
		p, authErr = h.opts.Auth.Request(r)
	}
	uw := &upgradeWriter{ResponseWriter: w, h: h}
	// permessage-deflate is negotiated here, not by coder/websocket
	// (inflate.go); Accept leaves the header as it is (library.go,
	// assumption 7).
	deflate := !h.opts.NoCompression && acceptDeflate(r.Header)
	if deflate {
		uw.Header().Set("Sec-WebSocket-Extensions", deflateResponse)
	}
	ws, err := websocket.Accept(uw, r, &h.accept)
	if err != nil {
		client.Close()
		if uw.conn != nil {
			_ = uw.conn.Abort()
		}
		uw.flushError()
		h.conns.Done()
		h.opts.Logger.Debug("websocket handshake failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(h.opts.ReadLimit)
	uw.conn.deflate, uw.conn.readLimit = deflate, h.opts.ReadLimit
	s := newSession(h, client, ws, uw.conn, deflate)
	if authErr != nil {
		// Browsers cannot read the status of a refused handshake, but they
		// see a close code: the writer closes with 1008 and the reason.
		// Credentials that could not be checked (the JWKS or the auth
		// upstream down) are no refusal: 1013, which clients retry, where
		// on a 1008 at the handshake they stop for good.
		d := hub.Refused(authErr.Error(), authErr)
		if errors.Is(authErr, auth.ErrUnavailable) {
			d = hub.Unchecked(authErr.Error(), authErr)
		}
		client.Fail(d)
		s.principal.Store(auth.Nobody)
	} else {
		s.principal.Store(p)
		if user, _ := p.Member(); user != "" {
			client.SetUser(user) // the control API finds the connection by it
		}
		s.expiry = auth.WatchExpiry(client, p, func(p *auth.Principal) { s.principal.Store(p) })
		s.rateKey = limit.Key(p.Subject, r)
	}
	s.start() // its writer marks the session done
}

// Wait blocks until every connection's goroutines have ended (after
// hub.Shutdown, each is closed with 1001), or ctx expires. http.Server's
// Shutdown does not track hijacked connections, so the server calls this.
func (h *Handler) Wait(ctx context.Context) error {
	if err := h.conns.Wait(ctx); err != nil {
		return fmt.Errorf("failed to wait for WebSocket connections: %w", err)
	}
	return nil
}
