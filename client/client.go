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
)

// Defaults of Options.
const (
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	// DefaultMaxMessage bounds one SSE event or WebSocket message.
	DefaultMaxMessage = 1 << 20
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
	HTTPClient *http.Client
	// BackoffMin and BackoffMax pace reconnects: the delay doubles from
	// min to max after each failed connection (with jitter over its upper
	// half) and goes back to min after a connection that delivered
	// something. Zero: DefaultBackoffMin, DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxMessage bounds one received event or message (0:
	// DefaultMaxMessage).
	MaxMessage int
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
	c := &Client{base: u, opts: o, hc: o.HTTPClient, log: o.Logger}
	if c.hc == nil {
		c.ownTr = http.DefaultTransport.(*http.Transport).Clone()
		c.hc = &http.Client{Transport: c.ownTr}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
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

// errorFrom reads an error answer.
func errorFrom(status int, body []byte) *Error {
	var e struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Code != "" {
		return &Error{Status: status, Code: e.Error.Code, Message: e.Error.Message}
	}
	return &Error{Status: status, Code: "http_" + strconv.Itoa(status),
		Message: fmt.Sprintf("%s: %.200s", http.StatusText(status), strings.TrimSpace(string(body)))}
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
		return 0, nil, errorFrom(resp.StatusCode, b)
	}
	return resp.StatusCode, b, nil
}
