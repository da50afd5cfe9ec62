package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// subscribeRef is the ref of a session's subscribe; refreshRef that of its
// token refreshes.
const (
	subscribeRef = `"s"`
	refreshRef   = `"r"`
)

// minRefresh is the least time between two token refreshes.
const minRefresh = time.Second

// eventPrefix starts every WebSocket event: the "op" field, then the
// envelope's fields.
var eventPrefix = []byte(`{"op":"event",`)

// statusDisconnected is the close code of a WebSocket the control API
// disconnected (POST /v1/disconnect).
const statusDisconnected websocket.StatusCode = 4001

// sessionWS runs one WebSocket connection until it ends.
func (s *Subscription) sessionWS(ctx context.Context) error {
	h, err := s.c.header(ctx)
	if err != nil {
		return err
	}
	u := "ws" + strings.TrimPrefix(s.c.url("/v1/ws"), "http")
	wd := s.wd
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: s.c.hc, HTTPHeader: h, Subprotocols: []string{"herald.v1"},
		// The server's keep-alive pings, and the pongs to the watchdog's,
		// are the signs of life of a connection without events.
		OnPingReceived: func(context.Context, []byte) bool { wd.touch(); return true },
		OnPongReceived: func(context.Context, []byte) { wd.touch() },
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != 0 {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			}
			return answerError(resp, body)
		}
		return fmt.Errorf("failed to connect: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(int64(s.c.opts.MaxMessage))
	if wd != nil {
		wd.ping = conn.Ping
	}

	s.holdAll()
	msg, err := s.subscribeMessage()
	if err != nil {
		return err
	}
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("failed to subscribe: %w", err)
	}

	// The refresher sends fresh tokens while the connection lives; it ends
	// with the session.
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if s.c.opts.TokenFunc != nil {
		if exp, ok := tokenExpiry(h.Get("Authorization")); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.refresher(sctx, conn, exp)
			}()
		}
	}

	// Reads take a context that never ends, and the session's end closes
	// the connection instead: coder/websocket arms a timer for every frame
	// read with a context that can end (four allocations per message).
	stopClose := context.AfterFunc(ctx, func() { conn.CloseNow() })
	defer stopClose()
	buf := make([]byte, 0, 4<<10)
	for {
		_, r, err := conn.Reader(context.Background())
		if err == nil {
			buf, err = readAll(r, buf[:0])
		}
		wd.touch()
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation && !s.live {
				// The handshake's token was refused: a new one will not be
				// different unless a TokenFunc says so, and a TokenFunc is
				// asked again on the next attempt only if this one is not
				// final. Treat it as the server's 401.
				return &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: closeReason(err)}
			}
			if websocket.CloseStatus(err) == statusDisconnected {
				// An operator's POST /v1/disconnect: reconnecting would
				// undo it, so the subscription ends, as herald.js's does.
				return &Error{Code: "disconnected", Message: "the server disconnected this connection: " + closeReason(err)}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("failed to read: %w", err)
		}
		if err := s.wsMessage(ctx, buf); err != nil {
			return err
		}
	}
}

// readAll reads r to its end into buf, reusing its capacity: the one
// buffer of a connection's messages.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Reason != "" {
		return ce.Reason
	}
	return "the server closed the connection (policy)"
}

// subscribeMessage is the session's subscribe op.
func (s *Subscription) subscribeMessage() ([]byte, error) {
	m := struct {
		Op             string          `json:"op"`
		Ref            json.RawMessage `json:"ref"`
		Topics         []string        `json:"topics"`
		Since          string          `json:"since,omitempty"`
		Rewind         int             `json:"rewind,omitempty"`
		State          bool            `json:"state,omitempty"`
		Presence       bool            `json:"presence,omitempty"`
		Info           json.RawMessage `json:"info,omitempty"`
		PresenceEvents bool            `json:"presence_events,omitempty"`
		Delta          string          `json:"delta,omitempty"`
		Conflate       string          `json:"conflate,omitempty"`
	}{Op: "subscribe", Ref: json.RawMessage(subscribeRef), Topics: s.patterns, State: s.opts.State,
		Presence: s.opts.Presence, PresenceEvents: s.opts.PresenceEvents}
	if s.opts.Presence && len(s.opts.Info) > 0 {
		m.Info = s.opts.Info
	}
	if s.haveLast {
		m.Since = s.last.String()
	} else {
		m.Rewind = s.opts.Rewind
	}
	if s.opts.Delta {
		m.Delta = "fossil"
	}
	if s.opts.Conflate > 0 {
		m.Conflate = s.opts.Conflate.String()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("failed to encode subscribe: %w", err)
	}
	return b, nil
}

// wsMessage handles one server message. b is reused for the next one.
func (s *Subscription) wsMessage(ctx context.Context, b []byte) error {
	if bytes.HasPrefix(b, eventPrefix) {
		e, err := parseEnvelope(b[len(eventPrefix):])
		if err != nil {
			return fmt.Errorf("failed to read event: %w", err)
		}
		return s.event(ctx, e)
	}
	var m struct {
		Op     string          `json:"op"`
		Ref    json.RawMessage `json:"ref"`
		ID     string          `json:"id"`
		Client string          `json:"client"`
		Reason string          `json:"reason"`
		Topics []string        `json:"topics"`
		Error  struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("failed to read message %.100q: %w", b, err)
	}
	switch m.Op {
	case "event":
		// Another layout of the fields: read by encoding/json.
		e, err := parseSlow(b[1:])
		if err != nil {
			return fmt.Errorf("failed to read event: %w", err)
		}
		return s.event(ctx, e)
	case "reset":
		return s.reset(ctx, m.ID, m.Reason, m.Topics)
	case "synced":
		return s.synced(ctx, m.ID, m.Topics)
	case "ok":
		if string(m.Ref) == subscribeRef {
			if m.ID != "" {
				if err := s.startAt(m.ID); err != nil {
					return err
				}
			}
			s.up(m.Client)
		}
	case "error":
		e := newError(0, m.Error.Code, m.Error.Message)
		switch string(m.Ref) {
		case subscribeRef:
			return e // permanent: the subscribe itself was refused
		case refreshRef:
			// The old token stays until it expires; the close that
			// follows makes a reconnect with a new one.
			s.c.log.Warn("token refresh refused", "err", e)
		default:
			s.c.log.Warn("server error", "err", e)
		}
	case "unsubscribed":
		return s.unsubscribed(m.Topics)
	}
	return nil
}

// refresher sends a fresh token from the TokenFunc before the current one
// (expiring at exp) expires, for as long as ctx lives.
func (s *Subscription) refresher(ctx context.Context, conn *websocket.Conn, exp time.Time) {
	for {
		// A quarter of the remaining life before expiry leaves time for a
		// slow TokenFunc. The floor keeps a clock behind the server's
		// (which sees the token as expired already, though the server
		// took it) from asking in a loop.
		wait := max(time.Until(exp)*3/4, minRefresh)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		tok, err := s.c.opts.TokenFunc(ctx)
		if err != nil {
			s.c.log.Warn("failed to get a token", "err", err)
			return
		}
		m, _ := json.Marshal(struct {
			Op    string          `json:"op"`
			Ref   json.RawMessage `json:"ref"`
			Token string          `json:"token"`
		}{"refresh", json.RawMessage(refreshRef), tok})
		if err := conn.Write(ctx, websocket.MessageText, m); err != nil {
			return
		}
		next, ok := tokenExpiry("Bearer " + tok)
		if !ok || !next.After(exp) {
			return // nothing to gain from asking again
		}
		exp = next
	}
}

// tokenExpiry reads the exp claim of a bearer JWT without verifying it:
// it only schedules the refresh, the server verifies.
func tokenExpiry(auth string) (time.Time, bool) {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return time.Time{}, false
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(c.Exp), 0), true
}
