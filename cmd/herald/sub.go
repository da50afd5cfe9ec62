package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldpush/herald/client"
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
	// delta asks for fossil deltas on keyed topics (the client applies
	// them, so the output always has full data); conflate (0 for none)
	// asks for at most one event per topic and key per interval.
	delta    bool
	conflate time.Duration
	// connectTimeout and idleTimeout are the client's bounds on a
	// connection attempt and on silence (0: the client's defaults).
	connectTimeout, idleTimeout time.Duration
}

// runSub runs "herald sub": subscribe over WebSocket or SSE and print one
// event per line (NDJSON) on stdout, reconnecting and resuming.
func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseSubFlags(args, stdout)
	if err != nil {
		return err
	}
	s := &subscriber{cfg: cfg, stdout: stdout, stderr: stderr}
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
	fs.DurationVar(&cfg.conflate, "conflate", 0, "at most one event per topic and key per `DURATION` (50ms..60s), the latest")
	fs.DurationVar(&cfg.connectTimeout, "connect-timeout", client.DefaultConnectTimeout, "how long a connection attempt may take until the subscription is confirmed; past it the attempt fails (the first one ends sub with exit 1, later ones are retried)")
	fs.DurationVar(&cfg.idleTimeout, "idle-timeout", client.DefaultIdleTimeout, "how long a connection may receive nothing, not even keep-alives, before it is dropped and the subscription resumes on a new one; over sse, more than the server's --heartbeat")
	if err := parseFlags(fs, args, stdout, "Usage: herald sub --topic PATTERN [--topic ...] [flags]\n\n"+
		"Subscribes and prints one event envelope per line (NDJSON) on stdout;\n"+
		"diagnostics go to stderr. Reconnects with backoff and resumes from the\n"+
		"last event printed, or from where the subscription started (--rewind\n"+
		"applies only to the first connection). Runs until interrupted.\n\nFlags:\n"); err != nil {
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
	if cfg.conflate != 0 && (cfg.conflate < hub.MinConflate || cfg.conflate > hub.MaxConflate) {
		return cfg, usagef("--conflate must be from 50ms to 60s, got %v", cfg.conflate)
	}
	if cfg.connectTimeout <= 0 || cfg.idleTimeout <= 0 {
		return cfg, usagef("--connect-timeout and --idle-timeout must be positive")
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

// subscriber is one "herald sub" run: a client.Subscription whose messages
// it prints. It is used by a single goroutine.
type subscriber struct {
	cfg            subConfig
	stdout, stderr io.Writer
	line           []byte
}

// run subscribes and prints until ctx ends (nil) or the subscription ends
// for good: the server refused it, or the first connection failed.
func (s *subscriber) run(ctx context.Context) error {
	// No keep-alive: every stream is long-lived, and an idle pooled
	// connection would outlive the command.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	// Herald never redirects: a redirect would take the token elsewhere,
	// and coder/websocket follows any number of them unless told not to.
	// client.Dial refuses them for an HTTPClient without a policy too;
	// saying so here keeps the rule where the client is made.
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c, err := client.Dial(ctx, s.cfg.base.String(), &client.Options{
		Transport: s.cfg.transport, Token: s.cfg.token, HTTPClient: hc,
		BackoffMin: subBackoffMin, BackoffMax: subBackoffMax, MaxMessage: subMaxMessage,
		ConnectTimeout: s.cfg.connectTimeout, IdleTimeout: s.cfg.idleTimeout,
		Logger: newStderrLogger(s.stderr),
	})
	if err != nil {
		return usagef("%v", err)
	}
	defer c.Close()
	fmt.Fprintf(s.stderr, "connecting to %s (%s)\n", s.cfg.base, s.cfg.transport)
	sub, err := c.Subscribe(ctx, s.cfg.topics, &client.SubscribeOptions{
		Since: s.cfg.since, Rewind: s.cfg.rewind, State: s.cfg.state,
		Presence: s.cfg.presence, Info: s.cfg.info, PresenceEvents: s.cfg.presenceEvents,
		Delta: s.cfg.delta, Conflate: s.cfg.conflate,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		var ce *client.Error
		if errors.As(err, &ce) {
			return ce // the server refused the subscription
		}
		return connectError(s.cfg.base.String(), err)
	}
	defer sub.Close()
	for m, err := range sub.All() {
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch m.Kind {
		case client.KindEvent:
			if err := s.print(&m.Event); err != nil {
				return err
			}
		case client.KindReset:
			fmt.Fprintf(s.stderr, "reset: %s for %v, resuming from %s\n", m.Reason, m.Topics, m.Cursor)
		case client.KindSynced:
			fmt.Fprintf(s.stderr, "synced: state of %v at %s\n", m.Topics, m.Cursor)
		}
	}
	return nil
}

// print writes one event: its envelope as one line of JSON, or with
// --format pretty a heading line and the indented data.
func (s *subscriber) print(e *client.Event) error {
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
		return fmt.Errorf("failed to write output: %w", err)
	}
	return nil
}
