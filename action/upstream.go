package action

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	// DefaultUpstreamTimeout is the default time one attempt may take.
	DefaultUpstreamTimeout = 10 * time.Second
	// DefaultUpstreamConns is the default number of idle keep-alive
	// connections kept to the backend: the default Workers, with room.
	DefaultUpstreamConns = 64
	// maxResponse caps how much of an upstream answer is read.
	maxResponse = 1 << 20
	// maxMessage caps an upstream error message passed on to clients.
	maxMessage = 1024
)

// UpstreamOptions configures an Upstream.
type UpstreamOptions struct {
	URL     string        // the backend's endpoint, e.g. http://app/actions
	Timeout time.Duration // per attempt; default 10s
	Client  *http.Client  // default: a client with sane transport limits
	Logger  *slog.Logger  // where attempt failures are logged in detail; default slog.Default()
	// MaxIdleConns is how many idle keep-alive connections the default
	// client keeps to the backend; size it to Options.Workers. Default 64.
	// Ignored when Client is set.
	MaxIdleConns int
}

// Upstream is a Handler that runs actions on an HTTP backend: it POSTs
// {"id","type","topic","payload","attempt"} as JSON with the action's
// Idempotency-Key header, so the backend can deduplicate retries. A 2xx
// answer's JSON body is the result (an empty body is null). A 4xx answer is
// a final failure: its body's {"error":{"code","message"}}, if present,
// becomes the Failure, else code "upstream_rejected". A 5xx answer, a
// timeout or a connection error is Retryable (code "upstream_unavailable"
// once attempts run out).
//
// A 2xx answer that is not JSON, any answer over 1 MiB, and a redirect (not
// followed by the default client) are final failures with code
// "upstream_bad_response". Safe for concurrent use.
type Upstream struct {
	url     string
	timeout time.Duration
	client  *http.Client
	log     *slog.Logger
}

// NewUpstream checks o and returns an Upstream.
func NewUpstream(o UpstreamOptions) (*Upstream, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("failed to parse upstream URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("failed to use upstream URL %q: it must be an absolute http or https URL", o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultUpstreamTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Client == nil {
		conns := o.MaxIdleConns
		if conns <= 0 {
			conns = DefaultUpstreamConns
		}
		tr := &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 5 * time.Second,
		}
		o.Client = &http.Client{
			Transport: tr,
			// Following a 301/302 would turn the POST into a GET without
			// the action: a redirect is answered as it is (a final failure).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Upstream{url: u.String(), timeout: o.Timeout, client: o.Client, log: o.Logger}, nil
}

// CloseIdleConnections closes the client's idle keep-alive connections (and
// so their goroutines); call it when the Upstream is no longer used.
func (u *Upstream) CloseIdleConnections() { u.client.CloseIdleConnections() }

// upstreamRequest is the body POSTed to the backend.
type upstreamRequest struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
	Attempt int             `json:"attempt"`
}

// Handle implements Handler.
func (u *Upstream) Handle(ctx context.Context, call *Call) (json.RawMessage, error) {
	payload := call.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	body, err := json.Marshal(upstreamRequest{
		ID: call.ID, Type: call.Type, Topic: call.Topic, Payload: payload, Attempt: call.Attempt,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to encode upstream request: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("failed to build upstream request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Idempotency-Key", call.IdempotencyKey)

	resp, err := u.client.Do(req)
	if err != nil {
		return nil, u.transient(ctx, actx, "failed to reach upstream", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, u.transient(ctx, actx, "failed to read upstream answer", err)
	}
	if len(b) > maxResponse {
		return nil, &Failure{Code: CodeUpstreamBadResponse,
			Message: fmt.Sprintf("upstream answered %s with more than %d bytes", resp.Status, maxResponse)}
	}

	switch c := resp.StatusCode; {
	case c >= 200 && c <= 299:
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return json.RawMessage("null"), nil
		}
		if !utf8.Valid(b) || !json.Valid(b) {
			return nil, &Failure{Code: CodeUpstreamBadResponse,
				Message: fmt.Sprintf("upstream answered %s with a body that is not JSON", resp.Status)}
		}
		return b, nil
	case c >= 400 && c <= 499:
		return nil, rejection(resp.Status, b)
	case c >= 500:
		return nil, Retryable(fmt.Errorf("upstream answered %s", resp.Status))
	default:
		return nil, &Failure{Code: CodeUpstreamBadResponse, Message: fmt.Sprintf("upstream answered %s", resp.Status)}
	}
}

// transient wraps a transport error as Retryable, naming a timeout of the
// attempt as such. When the caller's own context ended (shutdown), the
// error is returned as it is: there is nothing to retry.
func (u *Upstream) transient(ctx, actx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	// Clients see the kind of failure, never the backend's address: that
	// detail goes to the log.
	u.log.Warn("upstream attempt failed", "what", what, "err", err)
	var kind string
	var ne net.Error
	switch {
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		kind = fmt.Sprintf("no answer within %v", u.timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		kind = "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		kind = "timed out"
	default:
		kind = "network error"
	}
	return Retryable(fmt.Errorf("%s: %s", what, kind))
}

// rejection is the Failure for a 4xx answer: the upstream's own
// {"error":{"code","message"}} when it sent one with a snake_case code.
func rejection(status string, body []byte) *Failure {
	var e struct {
		Error *Failure `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && validCode(e.Error.Code) {
		msg := e.Error.Message
		if msg == "" {
			msg = "upstream answered " + status
		}
		return &Failure{Code: e.Error.Code, Message: truncate(msg, maxMessage)}
	}
	return &Failure{Code: CodeUpstreamRejected, Message: "upstream answered " + status}
}

// validCode reports whether c is a snake_case code like the protocol's own.
func validCode(c string) bool {
	if c == "" || len(c) > 64 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if b := c[i]; !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// truncate shortens s to at most n bytes (plus an ellipsis); a character
// cut in two is dropped.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
