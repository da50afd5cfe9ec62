// Package sse serves the hub's events as Server-Sent Events on GET /v1/events.
//
// One request is one hub.Client. The handler subscribes it, and then one
// writer at a time sends the stream:
//   - HTTP/1.x (conn.go): the handler hijacks the connection, writes the
//     response head and the retry hint, and returns. The client's writer
//     (hub.Client.Serve) sends events and heartbeats, and parks when idle,
//     ending its goroutine until there is work; a reader goroutine waits
//     for the peer to leave.
//   - HTTP/2, or a connection a wrapper keeps from being hijacked
//     (stream.go): the handler goroutine that net/http runs for the
//     request sends the headers and the retry hint, then runs the writer
//     itself, without parking, until the request's context ends.
//
// Each wake drains everything the hub queued and writes it as one buffer
// with one flush, so a burst costs one write per connection rather than one
// per event, and an idle connection holds no buffer.
//
// Slow consumers: the hub bounds each client's queue (hub.Options.QueueBytes).
// A client that lets it overflow is failed by the hub with
// hub.ErrSlowConsumer without ever blocking the publisher or other clients;
// its writer sees the error at its next wake and closes the connection
// (not a clean end of the response, which would keep the socket open for
// keep-alive behind a backlog the client never read). A client that stops
// reading leaves the writer blocked in a write: the per-batch write deadline
// (Options.WriteTimeout) bounds that, after which the client is failed as a
// slow consumer and the connection is closed. So a stalled connection lives
// at most about WriteTimeout after its queue overflowed. The browser's
// EventSource then reconnects with Last-Event-ID and resumes where it stopped
// (or gets a herald.reset if that is no longer retained).
//
// On hub shutdown (hub.ErrGoingAway) the response ends cleanly instead, so
// the client sees the end of the stream and reconnects elsewhere.
package sse

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/tracker"
	"github.com/heraldpush/herald/limit"
)

// Defaults of Options.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultRetry        = 2 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// MaxPatterns is the most topic= patterns one request may subscribe to; more
// is 400 invalid_pattern. It bounds the index entries one request can create.
const MaxPatterns = 256

// Options configures a Handler.
type Options struct {
	Hub          *hub.Hub
	Heartbeat    time.Duration // comment line interval; default 15s
	Retry        time.Duration // "retry:" hint sent first; default 2s
	WriteTimeout time.Duration // deadline for each batch write; default 10s
	WriteLinger  time.Duration // how long a writer woken soon after its last write waits for more before it writes (hub.WriterOptions.Linger); 0: none
	// Auth, if set, checks each stream's credentials and grants; the
	// stream ends when its token expires. Nil: no authentication.
	Auth *auth.Authenticator
	// Conns, if set, bounds open streams (with the WebSockets it is shared
	// with): over it, 503 unavailable or 429 rate_limited per address.
	Conns  *limit.Conns
	Logger *slog.Logger
}

// Handler serves GET /v1/events. It is safe for concurrent use.
//
// hub.Shutdown (or Close) fails every hub client with hub.ErrGoingAway,
// which ends every open stream promptly. http.Server.Shutdown then waits for
// the HTTP/2 handlers to return; the streams on hijacked connections, which
// it does not see, are counted by the Handler (Wait).
type Handler struct {
	opts    Options
	retry   []byte          // the "retry: N\n\n" preamble
	streams tracker.Tracker // streams on hijacked connections (conn.go)
	// conn and stream shape the writers of streams on hijacked connections
	// (they park) and of HTTP/2 streams (on the handler's goroutine); tests
	// shorten conn.ParkAfter.
	conn, stream hub.WriterOptions
}

// New returns a Handler serving o.Hub, which must not be nil.
func New(o Options) *Handler {
	if o.Hub == nil {
		panic("sse: Options.Hub is nil")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	retry := strconv.AppendInt([]byte("retry: "), o.Retry.Milliseconds(), 10)
	return &Handler{opts: o, retry: append(retry, "\n\n"...),
		// Streams opened together are not all woken together ever after.
		conn:   hub.WriterOptions{KeepAlive: o.Heartbeat, KeepAliveJitter: true, WritesKeepAlive: true, ParkAfter: parkAfter, Unsubscribed: unsubscribedFrame, Linger: o.WriteLinger},
		stream: hub.WriterOptions{KeepAlive: o.Heartbeat, WritesKeepAlive: true, Unsubscribed: unsubscribedFrame, Linger: o.WriteLinger},
	}
}

// ServeHTTP implements http.Handler. It returns when the client goes away,
// the hub closes the client (slow consumer, shutdown, broker failure) or a
// write fails or times out.
//
// Query: topic=PATTERN (repeatable, at least one), last_event_id=CURSOR,
// presence=1 (the stream is a member of each topic, exact topics only, its
// info from the token's herald.info claim), presence_events=1 (the topics'
// herald.join and herald.leave events),
// rewind=N (0..1000: the newest N retained matching events first; ignored
// with a cursor, refused when malformed even then), state=1 (the state of
// the matching topics first, then herald.synced; with a cursor only if the
// cursor cannot be served; state=0 is the default), delta=fossil (keyed
// events as deltas), conflate=DURATION (at most one event per topic and key
// per interval, 50ms to 60s); the Last-Event-ID header
// wins over the query parameter. An unusable cursor is not an error: the
// stream opens and starts with a herald.reset event.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		apierror.Write(w, apierror.New(http.StatusMethodNotAllowed, apierror.MethodNotAllowed, "use GET for the event stream"))
		return
	}
	q := r.URL.Query()
	patterns, perr := parsePatterns(q["topic"])
	if perr != nil {
		apierror.Write(w, perr)
		return
	}
	var sreq hub.SubscribeRequest
	rewind := 0
	if v, ok := q["rewind"]; ok {
		var err error
		if rewind, err = hub.ParseRewind(v[0]); err != nil || len(v) > 1 {
			if err == nil {
				err = fmt.Errorf("%w: give rewind once", hub.ErrInvalidRewind)
			}
			apierror.WriteErr(w, err)
			return
		}
	}
	presence, perr := flag(q, "presence")
	if perr == nil {
		var events bool
		events, perr = flag(q, "presence_events")
		sreq.PresenceEvents = events
	}
	if perr != nil {
		apierror.Write(w, perr)
		return
	}
	state := false
	if v, ok := q["state"]; ok {
		if len(v) > 1 || (v[0] != "0" && v[0] != "1") {
			apierror.Write(w, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, "state must be given once, as 1 or 0"))
			return
		}
		state = v[0] == "1"
	}
	if err := shapingQuery(q, &sreq); err != nil {
		apierror.WriteErr(w, err)
		return
	}
	p := auth.Everyone
	if h.opts.Auth != nil {
		var err error
		if p, err = h.opts.Auth.Request(r); err != nil {
			apierror.WriteErr(w, err)
			return
		}
		for _, pat := range patterns {
			if !p.MaySubscribe(pat) {
				apierror.Write(w, apierror.Denied(p, fmt.Sprintf("subscribing to %q", pat)))
				return
			}
		}
	}
	if !canFlush(w) {
		h.opts.Logger.Error("sse: the response writer cannot flush; a wrapper must keep Flush or Unwrap (felixge/httpsnoop)")
		apierror.Write(w, apierror.New(http.StatusInternalServerError, apierror.Internal, "streaming is not supported by this server"))
		return
	}
	since := r.Header.Get("Last-Event-ID")
	if since == "" {
		since = q.Get("last_event_id")
	}

	release, err := h.opts.Conns.Acquire(limit.ClientIP(r))
	if err != nil {
		apierror.WriteErr(w, err)
		return
	}
	sreq.Patterns, sreq.Since, sreq.Rewind = patterns, since, rewind
	if presence {
		// An EventSource cannot send a body: the member's info is the
		// token's herald.info claim.
		sreq.Presence = true
		sreq.User, sreq.Info = p.Member()
	}
	c, err := h.opts.Hub.NewClient("sse")
	if err != nil {
		release()
		// The hub is shutting down: this node takes no new streams.
		apierror.Write(w, apierror.New(http.StatusServiceUnavailable, apierror.Unavailable, "the server is shutting down"))
		return
	}
	context.AfterFunc(c.Context(), release) // the stream ends with its client
	// Registration is synchronous: every event published from here on is
	// queued for c, so once the client sees the response open it misses
	// nothing (SPEC: the subscription is live before the headers go out).
	if state {
		sreq.State, sreq.Synced = true, syncedFrame
	}
	sreq.Start = startFrame
	if err := c.Subscribe(sreq); err != nil {
		c.Close()
		apierror.WriteErr(w, err)
		return
	}
	w.Header().Set("Herald-Client", c.ConnID())
	if user, _ := p.Member(); user != "" {
		c.SetUser(user) // the control API finds the stream by it
	}
	auth.WatchExpiry(c, p, nil)
	if h.serveConn(w, r, c) {
		return // the stream's goroutines own c now
	}
	defer c.Close()
	h.serveStream(w, r, c)
}

// Wait blocks until every stream on a hijacked connection has ended (after
// hub.Shutdown each ends promptly), or ctx expires. http.Server's Shutdown
// does not track hijacked connections, so the server calls this.
func (h *Handler) Wait(ctx context.Context) error {
	if err := h.streams.Wait(ctx); err != nil {
		return fmt.Errorf("failed to wait for SSE streams: %w", err)
	}
	return nil
}

// parsePatterns validates every topic= value; the first bad one is the error.
func parsePatterns(raw []string) ([]hub.Pattern, *apierror.Error) {
	if len(raw) == 0 {
		return nil, apierror.New(http.StatusBadRequest, apierror.InvalidPattern, "at least one topic= pattern is required")
	}
	if len(raw) > MaxPatterns {
		return nil, apierror.New(http.StatusBadRequest, apierror.InvalidPattern,
			"at most "+strconv.Itoa(MaxPatterns)+" topic= patterns per stream")
	}
	out := make([]hub.Pattern, 0, len(raw))
	for _, s := range raw {
		p, err := hub.ParsePattern(s)
		if err != nil {
			return nil, apierror.New(http.StatusBadRequest, apierror.InvalidPattern, err.Error())
		}
		out = append(out, p)
	}
	return out, nil
}

// flag reads an optional boolean query parameter: 1 or true, 0 or false.
func flag(q url.Values, name string) (bool, *apierror.Error) {
	v, ok := q[name]
	if !ok {
		return false, nil
	}
	switch {
	case len(v) > 1:
		return false, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, "give "+name+"= once")
	case v[0] == "1" || v[0] == "true":
		return true, nil
	case v[0] == "0" || v[0] == "false":
		return false, nil
	}
	return false, apierror.New(http.StatusBadRequest, apierror.InvalidRequest, name+"= must be 1 or 0 (true or false)")
}

// canFlush reports whether http.ResponseController can flush w, following
// Unwrap as it does, so a wrapper that hides Flush is found before the
// status is sent.
func canFlush(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Flusher, interface{ FlushError() error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// shapingQuery reads delta= and conflate=, each at most once, into req.
func shapingQuery(q url.Values, req *hub.SubscribeRequest) error {
	if v, ok := q["delta"]; ok {
		if len(v) > 1 || v[0] == "" {
			return fmt.Errorf("%w: give delta once, as delta=%s", hub.ErrInvalidDelta, hub.DeltaFossil)
		}
		d, err := hub.ParseDelta(v[0])
		if err != nil {
			return err
		}
		req.Delta = d
	}
	if v, ok := q["conflate"]; ok {
		if len(v) > 1 {
			return fmt.Errorf("%w: give conflate once", hub.ErrInvalidConflate)
		}
		d, err := hub.ParseConflate(v[0])
		if err != nil {
			return err
		}
		req.Conflate = d
	}
	return nil
}
