// Package sse serves the hub's events as Server-Sent Events on GET /v1/events.
package sse

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Options configures a Handler.
type Options struct {
	Hub          *hub.Hub
	Heartbeat    time.Duration // comment line interval; default 15s
	Retry        time.Duration // "retry:" hint sent first; default 2s
	WriteTimeout time.Duration // deadline for each batch write; default 10s
	Logger       *slog.Logger
}

// Handler serves GET /v1/events.
type Handler struct{ opts Options }

// New returns a Handler.
func New(o Options) *Handler { return &Handler{opts: o} }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}
