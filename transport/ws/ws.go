// Package ws serves the hub over WebSocket on GET /v1/ws.
package ws

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Options configures a Handler.
type Options struct {
	Hub            *hub.Hub
	AllowedOrigins []string      // Origin patterns (coder/websocket OriginPatterns); empty: same host only
	ReadLimit      int64         // largest client message; default 64 KiB
	PingInterval   time.Duration // keep-alive ping interval; default 25s
	WriteTimeout   time.Duration // deadline for each batch write; default 10s
	Logger         *slog.Logger
}

// Handler serves GET /v1/ws.
type Handler struct{ opts Options }

// New returns a Handler.
func New(o Options) *Handler { return &Handler{opts: o} }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}

// Wait blocks until every connection's goroutines have ended (after
// hub.Shutdown, each is closed with 1001), or ctx expires. http.Server's
// Shutdown does not track hijacked connections, so the server calls this.
func (h *Handler) Wait(ctx context.Context) error { return nil }
