package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/heraldpush/herald/client"
)

// dialAPI returns a client of the server at base for the commands that
// make API requests (pub, action, state, presence, disconnect,
// unsubscribe), sending token as its bearer token and apiKey as X-API-Key
// (either may be empty) and bounding each request by timeout (0: none).
// Close releases it and its connections.
func dialAPI(ctx context.Context, base, token, apiKey string, timeout time.Duration) (*client.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return client.Dial(ctx, base, &client.Options{Token: token, APIKey: apiKey, HTTPClient: &http.Client{Transport: tr, Timeout: timeout}})
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
		return fmt.Errorf("%s: %s (HTTP %d)", ce.Code, ce.Message, ce.Status)
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
