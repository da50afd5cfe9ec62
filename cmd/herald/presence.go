package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/heraldpush/herald/hub"
)

const presenceUsage = `Usage: herald presence [flags] TOPIC

Prints the members of a topic's presence, one member object per line
({"client","user","info"}, NDJSON), in the order they joined, and on stderr
the position the list is exact at and how many connections and users it
holds: "herald sub --presence-events --since" that position follows every
join and leave after it.

Exit status: 0 printed, 1 an error (message on stderr), 2 bad flags.

Flags:
`

// runPresence runs "herald presence": GET /v1/topics/{topic}/presence.
func runPresence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		rawURL, token string
		timeout       time.Duration
	)
	fs := flag.NewFlagSet("herald presence", flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&token, "token", "", "`JWT` sent as Authorization: Bearer")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of the request")
	if err := parseCommand(fs, args, stdout, presenceUsage, "TOPIC"); err != nil {
		return err
	}
	topic := fs.Arg(0)
	if err := hub.ValidateTopic(topic); err != nil {
		return usagef("%v", err)
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return err
	}
	if timeout <= 0 {
		return usagef("--timeout must be positive, got %v", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := newAPIClient(base, token, timeout)
	defer c.close()
	_, body, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/presence", nil, nil)
	if err != nil {
		return err
	}
	var p struct {
		ID      string            `json:"id"`
		Members []json.RawMessage `json:"members"`
		Clients int               `json:"clients"`
		Users   int               `json:"users"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("failed to read the presence of %s: %w", topic, err)
	}
	lines := make([]string, len(p.Members))
	for i, m := range p.Members {
		lines[i] = string(m)
	}
	if err := printLines(stdout, lines); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "presence of %s at %s: %d clients, %d users\n", topic, p.ID, p.Clients, p.Users)
	return nil
}
