package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldpush/herald/client"
)

// apiClient makes the JSON API requests of pub and action. Its methods may
// be called from one goroutine at a time; close releases its connections.
type apiClient struct {
	base  string
	token string
	tr    *http.Transport
	hc    *http.Client
}

func newAPIClient(base, token string, timeout time.Duration) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &apiClient{base: base, token: token, tr: tr, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

// close ends the idle keep-alive connections and their goroutines.
func (c *apiClient) close() { c.tr.CloseIdleConnections() }

// apiError is an error answer of the server: {"error":{"code","message"}}.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}

// do sends one request with a JSON body (if any) and returns the status and
// body of a 2xx answer. Any other answer is an *apiError; a server that
// cannot be reached is reported as such.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, hdr http.Header) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("failed to build request: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return 0, nil, fmt.Errorf("cannot connect to %s: connection refused", c.base)
		case errors.As(err, &op) && op.Op == "dial":
			return 0, nil, fmt.Errorf("cannot connect to %s: %v", c.base, op.Err)
		}
		return 0, nil, fmt.Errorf("failed to %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// Bounded: answers of this API are small; a status document carries a
	// result of at most the server's body limit.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("failed to read the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error *struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != nil && e.Error.Code != "" {
			return 0, nil, &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
		}
		return 0, nil, &apiError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: fmt.Sprintf("%s %s: %.200s", method, path, strings.TrimSpace(string(b)))}
	}
	return resp.StatusCode, b, nil
}

// dialAPI returns a client of the server at base for the commands that
// make API requests (pub, action), sending token as its bearer token and
// bounding each request by timeout (0: none). Close releases it.
func dialAPI(ctx context.Context, base, token string, timeout time.Duration) (*client.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return client.Dial(ctx, base, &client.Options{Token: token, HTTPClient: &http.Client{Transport: tr, Timeout: timeout}})
}

// commandError words an error of the client package for a command's
// user: a server that cannot be reached as such, an error answer as
// "CODE: MESSAGE (HTTP STATUS)".
func commandError(base string, err error) error {
	var ce *client.Error
	if errors.As(err, &ce) {
		if ce.Status == 0 {
			return fmt.Errorf("%s: %s", ce.Code, ce.Message)
		}
		return &apiError{Status: ce.Status, Code: ce.Code, Message: ce.Message}
	}
	var op *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot connect to %s: connection refused", base)
	case errors.As(err, &op) && op.Op == "dial":
		return fmt.Errorf("cannot connect to %s: %v", base, op.Err)
	}
	return err
}

// connectError words a failure of herald sub's first connection.
func connectError(u string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot connect to %s: connection refused", u)
	}
	return fmt.Errorf("cannot connect to %s: %w", u, err)
}

// parseBaseURL checks --url: an absolute http or https URL, returned
// without a trailing slash.
func parseBaseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usagef("--url %q must be an http:// or https:// URL", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// printLines writes lines to w in one write.
func printLines(w io.Writer, lines []string) error {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("failed to write output: %w", err)
	}
	return nil
}
