package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// healthBodyLimit bounds how much of an unhealthy answer is read and shown.
const healthBodyLimit = 512

// runHealth checks one URL the way a container's health check does: a GET
// that must answer 2xx within --timeout. Herald's image has no shell and no
// curl, so the binary checks a node itself: `herald health
// http://127.0.0.1:8080/readyz`. It returns nil when healthy.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 5*time.Second, "the longest the check may take")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: herald health [--timeout D] URL\n\n"+
			"GETs URL, e.g. http://127.0.0.1:8080/readyz, and exits 0 if it answers 2xx,\n"+
			"1 otherwise: a health check for images without curl.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if fs.NArg() != 1 {
		return usagef("health takes one URL, e.g. http://127.0.0.1:8080/readyz, got %q", fs.Args())
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("health needs an http:// or https:// URL, got %q", target)
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive, got %v", *timeout)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("failed to check %s: %w", target, err)
	}
	// One connection, closed after the check; no proxy from the environment,
	// as the node checked is the one beside it.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("failed to check %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, healthBodyLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s: %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: %s\n", target, resp.Status)
	return nil
}
