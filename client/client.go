package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of Options.
const (
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	// DefaultMaxMessage bounds one SSE event or WebSocket message.
	DefaultMaxMessage = 1 << 20
	// DefaultConnectTimeout is far above a healthy handshake's few round
	// trips, yet short enough that a server that never answers costs a
	// retry rather than the subscription.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultIdleTimeout is three of the server's WebSocket ping intervals
	// (25 s) and five of its SSE heartbeats (15 s), its defaults: one
	// late keep-alive does not end a connection, a silent server does.
	DefaultIdleTimeout = 75 * time.Second
)

// Options configure a Client. The zero value (or nil) subscribes over
// WebSocket without credentials.
type Options struct {
	// Transport of subscriptions: "ws" (the default) or "sse".
	Transport string
	// Token is a JWT sent as "Authorization: Bearer" on every connection
	// and request. TokenFunc, if set, is called instead each time one is
	// needed (every reconnect and request, and before a WebSocket's token
	// expires), so a long-lived client can present fresh tokens.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)
	// APIKey is sent as "X-API-Key" (the backend's credential).
	APIKey string
	// HTTPClient makes every request and connection. Nil: a client of
	// the package's own, whose idle connections Close releases. Its
	// Timeout, if any, must not end the long-lived subscription streams.
	// The Client uses a copy of it. A nil CheckRedirect becomes one that
	// refuses every redirect (Herald never redirects: a 3xx answer is an
	// error); a CheckRedirect of the caller's is kept, and X-API-Key is
	// taken off any redirect it allows to another host.
	HTTPClient *http.Client
	// BackoffMin and BackoffMax pace reconnects: the delay doubles from
	// min to max after each failed connection (with jitter over its upper
	// half) and goes back to min after a connection that delivered
	// something. Zero: DefaultBackoffMin, DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxMessage bounds one received event or message, and the data a
	// delta makes (0: DefaultMaxMessage).
	MaxMessage int
	// ConnectTimeout bounds each connection attempt of a subscription:
	// until the server has confirmed the subscription (the WebSocket's
	// "ok") or answered the SSE request (its headers). An attempt that
	// takes longer fails, and is retried as a refused one is (0:
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// IdleTimeout ends a subscription's connection that has received
	// nothing, not even the server's keep-alives, for this long: the
	// subscription reconnects and resumes from its cursor. Over WebSocket
	// the client pings the server after half of it in silence; over SSE
	// it must exceed the server's heartbeat interval, 15 s by default.
	// 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Logger receives the subscriptions' connects, disconnects, resets
	// and synced markers. Nil: nothing is logged.
	Logger *slog.Logger
}

// Client talks to one Herald server. It is safe for concurrent use.
type Client struct {
	base   *url.URL // http or https, no trailing slash
	opts   Options
	hc     *http.Client
	ownTr  *http.Transport // nil when the caller gave the HTTP client
	log    *slog.Logger
	ctx    context.Context // ends at Close: every subscription's parent
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	subs   sync.WaitGroup
}

// Dial returns a Client of the server at baseURL (http://, https://, ws://
// or wss://, without the /v1 path). It checks the URL and the options;
// connections are made by Subscribe and requests by the other methods, so
// Dial does not fail when the server is down. ctx is not retained.
func Dial(ctx context.Context, baseURL string, opts *Options) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to dial: %w", err)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("failed to parse URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("failed to parse URL %q: the scheme must be http, https, ws or wss", baseURL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("failed to parse URL %q: want scheme://host[:port][/path]", baseURL)
	}
	switch o.Transport {
	case "":
		o.Transport = "ws"
	case "ws", "sse":
	default:
		return nil, fmt.Errorf("failed to dial: transport %q is neither ws nor sse", o.Transport)
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	c := &Client{base: u, opts: o, log: o.Logger}
	if o.HTTPClient == nil {
		c.ownTr = http.DefaultTransport.(*http.Transport).Clone()
		c.hc = &http.Client{Transport: c.ownTr, CheckRedirect: refuseRedirect}
	} else {
		// A copy: the caller's client may serve other requests, under
		// its own policy.
		hc := *o.HTTPClient
		hc.CheckRedirect = redirectPolicy(o.HTTPClient.CheckRedirect)
		c.hc = &hc
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// refuseRedirect makes a 3xx the answer. Herald never redirects, so a
// redirect comes from something else on the way, and following it would
// take the credentials with it. It matters for WebSocket handshakes above
// all: coder/websocket installs a CheckRedirect of its own that, over a
// nil one, follows redirects without net/http's limit of 10.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirectPolicy returns the CheckRedirect for the client's copy of a
// caller's http.Client, whose own is check. A policy of the caller's
// stands, but for one header: net/http keeps Authorization from other
// hosts, and copies X-API-Key to any.
func redirectPolicy(check func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	if check == nil {
		return refuseRedirect
	}
	return func(req *http.Request, via []*http.Request) error {
		if err := check(req, via); err != nil {
			return err
		}
		if req.URL.Host != via[0].URL.Host {
			req.Header.Del("X-API-Key")
		}
		return nil
	}
}

// Close ends every subscription and action handle of the client, waits
// for their goroutines, and releases the client's idle connections. It
// returns nil; calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.subs.Wait()
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
	return nil
}

// ErrClosed is returned by the methods of a closed Client.
var ErrClosed = errors.New("client closed")

// Error is an error answer of the server: an HTTP status with
// {"error":{"code","message"}}, or a WebSocket error reply (Status 0).
type Error struct {
	Status  int
	Code    string // snake_case, e.g. "forbidden", "invalid_pattern"
	Message string
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("server answered %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// permanent reports whether asking again would get the same answer: the
// request itself was refused (400, 401, 403, 404, 413, 422, and 501 for
// state on a broker without it), or a WebSocket error reply refused a
// subscribe for another reason than an unavailable broker or a rate.
func (e *Error) permanent() bool {
	if e.Status == 0 {
		// A WebSocket error reply: only its code tells a broker that
		// cannot be reached, or a rate, from a refusal.
		return e.Code != "unavailable" && e.Code != "rate_limited"
	}
	switch e.Status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusNotImplemented, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// Bounds of an Error's code and message: an answer of megabytes (from a
// proxy, say) is not kept whole in an error that gets logged.
const (
	maxErrorCode    = 64
	maxErrorMessage = 1 << 10
)

// newError returns an error answer, its code and message cut to their
// bounds.
func newError(status int, code, message string) *Error {
	return &Error{Status: status, Code: truncate(code, maxErrorCode), Message: truncate(message, maxErrorMessage)}
}

// truncate cuts s to at most n bytes, at a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	i := n - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}

// errorFrom reads an error answer.
func errorFrom(status int, body []byte) *Error {
	var e struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Code != "" {
		return newError(status, e.Error.Code, e.Error.Message)
	}
	return &Error{Status: status, Code: "http_" + strconv.Itoa(status),
		Message: fmt.Sprintf("%s: %.200s", http.StatusText(status), strings.TrimSpace(string(body)))}
}

// answerError is errorFrom for a whole answer: a redirect, which the
// client does not follow, says where to.
func answerError(resp *http.Response, body []byte) *Error {
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: fmt.Sprintf("%s: refused a redirect to %.200q (Herald does not redirect)", http.StatusText(resp.StatusCode), loc)}
	}
	return errorFrom(resp.StatusCode, body)
}

// header returns the credentials of one connection or request.
func (c *Client) header(ctx context.Context) (http.Header, error) {
	h := http.Header{}
	tok := c.opts.Token
	if c.opts.TokenFunc != nil {
		var err error
		if tok, err = c.opts.TokenFunc(ctx); err != nil {
			return nil, fmt.Errorf("failed to get a token: %w", err)
		}
	}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	if c.opts.APIKey != "" {
		h.Set("X-API-Key", c.opts.APIKey)
	}
	return h, nil
}

// url returns the absolute URL of path (which starts with /v1).
func (c *Client) url(path string) string { return c.base.String() + path }

// maxAnswer bounds the body of an API answer: a status document carries
// a result of at most the server's body limit.
const maxAnswer = 64 << 20

// do sends one API request with a JSON body (if any) and returns the
// status and body of a 2xx answer; any other answer is an *Error.
func (c *Client) do(ctx context.Context, method, path string, body []byte, extra http.Header) (int, []byte, error) {
	if c.ctx.Err() != nil {
		return 0, nil, ErrClosed
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return 0, nil, fmt.Errorf("failed to build request: %w", err)
	}
	h, err := c.header(ctx)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range extra {
		h[k] = v
	}
	req.Header = h
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("failed to %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("failed to read the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return 0, nil, answerError(resp, b)
	}
	return resp.StatusCode, b, nil
}
