package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/r3labs/sse/v2"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
)

// Reconnect pacing: exponential backoff with jitter, back to the start after
// a connection that delivered something.
const (
	subBackoffMin = 250 * time.Millisecond
	subBackoffMax = 10 * time.Second
	// subMaxMessage bounds one SSE event or WebSocket message.
	subMaxMessage = 1 << 20
)

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (f *stringsFlag) String() string { return strings.Join(*f, ",") }

func (f *stringsFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

type subConfig struct {
	base      *url.URL
	transport string
	topics    []string
	since     string
	rewind    int
	state     bool
	token     string
	// presence makes the connection a member of each topic (exact topics),
	// described by info (WS; SSE takes it from the token);
	// presenceEvents prints the topics' joins and leaves.
	presence       bool
	info           json.RawMessage
	presenceEvents bool
	pretty         bool
	// delta asks for fossil deltas on keyed topics and applies them, so
	// the output always has full data; conflate ("" for none) asks for at
	// most one event per topic and key per interval.
	delta    bool
	conflate string
}

// runSub runs "herald sub": subscribe over WebSocket or SSE and print one
// event per line (NDJSON) on stdout, reconnecting and resuming.
func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseSubFlags(args, stdout)
	if err != nil {
		return err
	}
	s := &subscriber{cfg: cfg, stdout: stdout, stderr: stderr}
	if cfg.since != "" {
		s.last, _ = hub.ParseCursor(cfg.since) // validated by parseSubFlags
		s.haveLast = true
	}
	s.inState = cfg.state && !s.haveLast
	return s.run(ctx)
}

func parseSubFlags(args []string, stdout io.Writer) (subConfig, error) {
	var cfg subConfig
	var rawURL, format, rewind, info string
	var topics stringsFlag
	fs := flag.NewFlagSet("herald sub", flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&cfg.transport, "transport", "ws", "transport: ws or sse")
	fs.Var(&topics, "topic", "topic `pattern` to subscribe to (repeatable, at least one), e.g. 'orders.*'")
	fs.StringVar(&cfg.since, "since", "", "resume after this `CURSOR` (the id of an event already seen)")
	fs.StringVar(&rewind, "rewind", "0", "without --since, start with the newest `N` (0..1000) retained events of the topics")
	fs.BoolVar(&cfg.state, "state", false, "start with the state of the topics (each key's latest event), then a synced line on stderr, then events")
	fs.StringVar(&cfg.token, "token", "", "`JWT` sent as Authorization: Bearer")
	fs.StringVar(&format, "format", "json", "output: json (one event envelope per line) or pretty")
	fs.BoolVar(&cfg.presence, "presence", false, "be a member of each topic's presence while subscribed (exact topics only)")
	fs.StringVar(&info, "info", "", "with --presence over ws, the member's info: a JSON `object` of at most 1 KiB (sse takes the token's herald.info)")
	fs.BoolVar(&cfg.presenceEvents, "presence-events", false, "also print the topics' herald.join and herald.leave events")
	fs.BoolVar(&cfg.delta, "delta", false, "ask for keyed events as fossil deltas and apply them (the output always has full data)")
	var conflate time.Duration
	fs.DurationVar(&conflate, "conflate", 0, "at most one event per topic and key per `DURATION` (50ms..60s), the latest")
	if err := parseFlags(fs, args, stdout, "Usage: herald sub --topic PATTERN [--topic ...] [flags]\n\n"+
		"Subscribes and prints one event envelope per line (NDJSON) on stdout;\n"+
		"diagnostics go to stderr. Reconnects with backoff and resumes from the\n"+
		"last event printed (--rewind applies only until one was). Runs until interrupted.\n\nFlags:\n"); err != nil {
		return cfg, err
	}
	if len(topics) == 0 {
		return cfg, usagef("sub needs at least one --topic")
	}
	for _, p := range topics {
		if _, err := hub.ParsePattern(p); err != nil {
			return cfg, usagef("invalid --topic %q: %v", p, err)
		}
	}
	cfg.topics = topics
	if info != "" {
		if !cfg.presence {
			return cfg, usagef("--info describes a member: give --presence too")
		}
		if err := hub.ValidateInfo(json.RawMessage(info)); err != nil || !json.Valid([]byte(info)) {
			return cfg, usagef("invalid --info: a JSON object of at most %d bytes", hub.MaxInfoBytes)
		}
		cfg.info = json.RawMessage(info)
	}
	if cfg.presence {
		for _, p := range topics {
			if pat, _ := hub.ParsePattern(p); !pat.Literal() {
				return cfg, usagef("--presence needs exact topics, and %q is a pattern", p)
			}
		}
	}
	if cfg.state && rewind != "0" {
		return cfg, usagef("--state and --rewind exclude each other")
	}
	if conflate != 0 {
		if conflate < 50*time.Millisecond || conflate > time.Minute {
			return cfg, usagef("--conflate must be from 50ms to 60s, got %v", conflate)
		}
		cfg.conflate = conflate.String()
	}
	if cfg.transport != "ws" && cfg.transport != "sse" {
		return cfg, usagef("--transport must be ws or sse, got %q", cfg.transport)
	}
	switch format {
	case "json":
	case "pretty":
		cfg.pretty = true
	default:
		return cfg, usagef("--format must be json or pretty, got %q", format)
	}
	if cfg.since != "" {
		if _, err := hub.ParseCursor(cfg.since); err != nil {
			return cfg, usagef("invalid --since %q: not a cursor", cfg.since)
		}
	}
	var err error
	if cfg.rewind, err = hub.ParseRewind(rewind); err != nil {
		return cfg, usagef("invalid --rewind %q: an integer from 0 to %d", rewind, hub.MaxRewind)
	}
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || u.Host == "" {
		return cfg, usagef("invalid --url %q", rawURL)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return cfg, usagef("--url must start with http://, https://, ws:// or wss://, got %q", rawURL)
	}
	cfg.base = u
	return cfg, nil
}

// fatalError ends runSub without a retry: the server refused the
// subscription itself, so asking again would get the same answer.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// subscriber is one "herald sub" run. It is used by a single goroutine.
type subscriber struct {
	cfg            subConfig
	stdout, stderr io.Writer
	http           *http.Client

	last      hub.Cursor // the last cursor printed or reset to: where to resume
	haveLast  bool
	connected bool // a subscription has been live at least once
	delivered bool // the current connection delivered an event or a reset
	line      []byte
	// inState: the state is being printed (before its synced), whose
	// events carry cursors below the last one printed (after a reset).
	inState bool
	// bases holds, with --delta, the current connection's delta bases.
	bases deltaBases
}

func (s *subscriber) run(ctx context.Context) error {
	// No keep-alive: every stream is long-lived, and an idle pooled
	// connection would outlive the command.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	s.http = &http.Client{Transport: tr}

	backoff := subBackoffMin
	for {
		fmt.Fprintf(s.stderr, "connecting to %s (%s)\n", s.cfg.base, s.cfg.transport)
		s.delivered = false
		s.bases.clear() // a new connection sends every key whole first
		if s.haveLast {
			// A resume: the server sends no state (the state printed so far
			// was in cursor order, so resuming after its last event misses
			// nothing), unless a reset comes first.
			s.inState = false
		}
		var err error
		if s.cfg.transport == "sse" {
			err = s.sessionSSE(ctx)
		} else {
			err = s.sessionWS(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return fe.err
		}
		if !s.connected {
			return connectError(s.cfg.base.String(), err)
		}
		if s.delivered {
			backoff = subBackoffMin
		}
		// Full range jitter over the upper half keeps a crowd of clients
		// from reconnecting in lockstep after a server restart.
		d := backoff/2 + rand.N(backoff/2+1)
		fmt.Fprintf(s.stderr, "disconnected: %v; reconnecting in %v\n", err, d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, subBackoffMax)
	}
}

// connectError words a failure of the very first connection.
func connectError(u string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot connect to %s: connection refused", u)
	}
	return fmt.Errorf("cannot connect to %s: %w", u, err)
}

// statusError turns a refused HTTP answer into an error carrying the
// server's JSON error code and message. 400, 401, 403, 404 and 501 (a
// subscribe with state on a broker without state) are fatal.
func statusError(code int, body []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	var err error
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		err = fmt.Errorf("server answered %d %s: %s", code, e.Error.Code, e.Error.Message)
	} else {
		err = fmt.Errorf("server answered %d %s", code, http.StatusText(code))
	}
	switch code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusNotImplemented:
		return &fatalError{err}
	}
	return err
}

// sessionSSE runs one SSE connection until it ends.
func (s *subscriber) sessionSSE(ctx context.Context) error {
	u := *s.cfg.base
	u.Path += "/v1/events"
	q := url.Values{"topic": s.cfg.topics}
	if s.cfg.state {
		q.Set("state", "1") // with a cursor, the server sends it again only after a reset
	}
	if !s.haveLast && s.cfg.rewind > 0 {
		q.Set("rewind", strconv.Itoa(s.cfg.rewind)) // once an event was printed, resume instead
	}
	if s.cfg.presence {
		q.Set("presence", "1")
	}
	if s.cfg.presenceEvents {
		q.Set("presence_events", "1")
	}
	if s.cfg.delta {
		q.Set("delta", "fossil")
	}
	if s.cfg.conflate != "" {
		q.Set("conflate", s.cfg.conflate)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return &fatalError{fmt.Errorf("failed to build request: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	if s.cfg.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.token)
	}
	if s.haveLast {
		req.Header.Set("Last-Event-ID", s.last.String())
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return statusError(resp.StatusCode, body)
	}
	s.connected = true
	fmt.Fprintf(s.stderr, "subscribed to %s as %s\n", strings.Join(s.cfg.topics, " "), resp.Header.Get("Herald-Client"))
	r := sse.NewEventStreamReader(resp.Body, subMaxMessage)
	for {
		block, err := r.ReadEvent()
		if err != nil {
			if err == io.EOF {
				return errors.New("the server ended the stream")
			}
			return fmt.Errorf("failed to read stream: %w", err)
		}
		id, typ, data := parseSSEBlock(block)
		// A cancelled request can leave a truncated last block: only
		// complete JSON is accepted.
		if !json.Valid(data) {
			continue
		}
		if typ == "herald.reset" {
			if err := s.reset(id, data); err != nil {
				return err
			}
			continue
		}
		if typ == "herald.synced" {
			s.synced(id, data)
			continue
		}
		if typ == "herald.unsubscribed" {
			s.unsubscribed(data)
			continue
		}
		if err := s.event(data); err != nil {
			return err
		}
	}
}

// parseSSEBlock extracts the fields of one event block; comments and
// unknown fields are ignored, data lines are joined with newlines.
func parseSSEBlock(block []byte) (id, typ string, data []byte) {
	first := true
	for len(block) > 0 {
		var line []byte
		if i := bytes.IndexAny(block, "\r\n"); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			line, block = block, nil
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			id = string(value)
		case "event":
			typ = string(value)
		case "data":
			if !first {
				data = append(data, '\n')
			}
			data = append(data, value...)
			first = false
		}
	}
	return id, typ, data
}

// sessionWS runs one WebSocket connection until it ends.
func (s *subscriber) sessionWS(ctx context.Context) error {
	h := http.Header{}
	if s.cfg.token != "" {
		h.Set("Authorization", "Bearer "+s.cfg.token)
	}
	c, resp, err := websocket.Dial(ctx, s.cfg.base.String()+"/v1/ws", &websocket.DialOptions{
		HTTPClient:   s.http,
		HTTPHeader:   h,
		Subprotocols: []string{"herald.v1"},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != 0 {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(resp.Body)
			}
			return statusError(resp.StatusCode, body)
		}
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(subMaxMessage)

	sub := struct {
		Op             string          `json:"op"`
		Ref            int             `json:"ref"`
		Topics         []string        `json:"topics"`
		Since          string          `json:"since,omitempty"`
		Rewind         int             `json:"rewind,omitempty"`
		State          bool            `json:"state,omitempty"`
		Presence       bool            `json:"presence,omitempty"`
		Info           json.RawMessage `json:"info,omitempty"`
		PresenceEvents bool            `json:"presence_events,omitempty"`
		Delta          string          `json:"delta,omitempty"`
		Conflate       string          `json:"conflate,omitempty"`
	}{Op: "subscribe", Ref: 1, Topics: s.cfg.topics, State: s.cfg.state, Presence: s.cfg.presence, Info: s.cfg.info,
		PresenceEvents: s.cfg.presenceEvents, Conflate: s.cfg.conflate}
	if s.cfg.delta {
		sub.Delta = "fossil"
	}
	if s.haveLast {
		sub.Since = s.last.String()
	} else {
		sub.Rewind = s.cfg.rewind
	}
	msg, _ := json.Marshal(sub)
	if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("failed to subscribe: %w", err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("failed to read: %w", err)
		}
		var head struct {
			Op     string          `json:"op"`
			Ref    json.RawMessage `json:"ref"`
			ID     string          `json:"id"`
			Client string          `json:"client"`
			Error  struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &head); err != nil {
			fmt.Fprintf(s.stderr, "ignoring a message that is not JSON: %.200q\n", b)
			continue
		}
		switch head.Op {
		case "event":
			if err := s.event(b); err != nil {
				return err
			}
		case "reset":
			if err := s.reset(head.ID, b); err != nil {
				return err
			}
		case "synced":
			s.synced(head.ID, b)
		case "unsubscribed":
			s.unsubscribed(b)
		case "ok":
			if string(head.Ref) == "1" {
				s.connected = true
				fmt.Fprintf(s.stderr, "subscribed to %s as %s\n", strings.Join(s.cfg.topics, " "), head.Client)
			}
		case "error":
			err := fmt.Errorf("server answered %s: %s", head.Error.Code, head.Error.Message)
			if string(head.Ref) == "1" {
				return &fatalError{err}
			}
			fmt.Fprintf(s.stderr, "%v\n", err)
		}
	}
}

// event prints one event envelope, unless it was already printed. With
// --delta it first turns a delta into data; a delta that does not apply
// ends the connection (an error, not fatal): the next one resumes after the
// last event printed and starts every key whole, so nothing wrong is ever
// printed and nothing is missed.
// unsubscribed reports on stderr that the server's control API removed
// subscriptions (WebSocket unsubscribed, SSE herald.unsubscribed): their
// events stop; the others go on.
func (s *subscriber) unsubscribed(raw []byte) {
	var u struct {
		Topics []string `json:"topics"`
	}
	_ = json.Unmarshal(raw, &u)
	fmt.Fprintf(s.stderr, "unsubscribed by the server from %s\n", strings.Join(u.Topics, " "))
}

func (s *subscriber) event(raw []byte) error {
	var e hub.Event
	if err := json.Unmarshal(raw, &e); err != nil || e.ID.Epoch == "" {
		fmt.Fprintf(s.stderr, "ignoring a malformed event: %.200q\n", raw)
		return nil
	}
	if s.cfg.delta && e.Key != "" {
		if err := s.undelta(&e, raw); err != nil {
			return err
		}
	}
	s.delivered = true
	if !s.inState && s.haveLast && e.ID.Epoch == s.last.Epoch && e.ID.Seq <= s.last.Seq {
		return nil // already printed: one line per event, even across reconnects
	}
	s.line = s.line[:0]
	if s.cfg.pretty {
		s.line = e.Time.UTC().AppendFormat(s.line, "2006-01-02T15:04:05.000Z07:00")
		s.line = fmt.Appendf(s.line, "  %s  %s  %s\n  ", e.Topic, e.Type, e.ID)
		var ind bytes.Buffer
		if json.Indent(&ind, e.Data, "  ", "  ") == nil {
			s.line = append(s.line, ind.Bytes()...)
		} else {
			s.line = append(s.line, e.Data...)
		}
	} else {
		s.line = e.AppendJSON(s.line)
	}
	s.line = append(s.line, '\n')
	if _, err := s.stdout.Write(s.line); err != nil {
		return &fatalError{fmt.Errorf("failed to write output: %w", err)}
	}
	s.last, s.haveLast = e.ID, true
	return nil
}

// undelta gives e, a keyed event of a --delta connection, its data: the
// delta applied to the key's base when the frame raw carries one. Either
// way e's data becomes the key's next base, also for an event that was
// already printed (the server counts what it wrote, not what was printed).
func (s *subscriber) undelta(e *hub.Event, raw []byte) error {
	k := e.Topic + "\n" + e.Key
	if e.Data == nil {
		var d struct {
			Delta *string `json:"delta"`
		}
		if err := json.Unmarshal(raw, &d); err != nil || d.Delta == nil {
			return fmt.Errorf("event %s has neither data nor delta", e.ID)
		}
		base, ok := s.bases.m[k]
		if !ok {
			return fmt.Errorf("event %s is a delta for key %q of %s, which this connection has no data of", e.ID, e.Key, e.Topic)
		}
		data, err := delta.Apply(base, []byte(*d.Delta))
		if err == nil && !json.Valid(data) {
			err = errors.New("the result is not JSON")
		}
		if err != nil {
			s.bases.clear()
			return fmt.Errorf("event %s: %w", e.ID, err)
		}
		e.Data = data
	}
	s.bases.set(k, e.Data)
	return nil
}

// Bounds of what --delta keeps per connection. The server keeps at most
// 4,096 keys and 4 MiB (docs/protocol.md): these leave room above that.
// Past them a key is forgotten; should its delta come, the connection is
// restarted, which costs a reconnect, never wrong output.
const (
	maxDeltaBases     = 16384
	maxDeltaBaseBytes = 64 << 20
)

// deltaBases is the exact data text of the latest event of each topic and
// key written to the current connection: the bases of its deltas.
type deltaBases struct {
	m     map[string][]byte
	bytes int
}

func (b *deltaBases) clear() {
	clear(b.m)
	b.bytes = 0
}

func (b *deltaBases) set(k string, data []byte) {
	if b.m == nil {
		b.m = make(map[string][]byte)
	}
	if old, ok := b.m[k]; ok {
		b.bytes -= len(k) + len(old)
		delete(b.m, k)
	}
	for k2, v := range b.m {
		if len(b.m) < maxDeltaBases && b.bytes+len(k)+len(data) <= maxDeltaBaseBytes {
			break
		}
		b.bytes -= len(k2) + len(v)
		delete(b.m, k2)
	}
	b.m[k] = bytes.Clone(data)
	b.bytes += len(k) + len(data)
}

// reset reports a herald.reset and moves the resume point to its cursor.
func (s *subscriber) reset(id string, data []byte) error {
	var r struct {
		Reason string   `json:"reason"`
		Topics []string `json:"topics"`
	}
	_ = json.Unmarshal(data, &r)
	s.bases.clear() // every key comes whole after a reset
	c, err := hub.ParseCursor(id)
	if err != nil {
		fmt.Fprintf(s.stderr, "reset: %s for %v, without a usable cursor %q\n", r.Reason, r.Topics, id)
		return nil
	}
	s.delivered = true
	s.last, s.haveLast = c, true
	s.inState = s.cfg.state // the state follows, then a synced
	fmt.Fprintf(s.stderr, "reset: %s for %v, resuming from %s\n", r.Reason, r.Topics, id)
	return nil
}

// synced reports a herald.synced, the end of the state, and moves the
// resume point to its cursor.
func (s *subscriber) synced(id string, data []byte) {
	var sy struct {
		Topics []string `json:"topics"`
	}
	_ = json.Unmarshal(data, &sy)
	c, err := hub.ParseCursor(id)
	if err != nil {
		fmt.Fprintf(s.stderr, "synced: %v, without a usable cursor %q\n", sy.Topics, id)
		return
	}
	s.delivered = true
	s.inState = false
	s.last, s.haveLast = c, true
	fmt.Fprintf(s.stderr, "synced: state of %v at %s\n", sy.Topics, id)
}
