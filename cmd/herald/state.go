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

const stateUsage = `Usage: herald state [flags] TOPIC

Prints the state of a keyed topic, the latest event of each key, as one event
envelope per line (NDJSON, as herald sub prints them), oldest first, and on
stderr the position the state is exact at: "herald sub --since" that position
follows every change after it.

Exit status: 0 printed, 1 an error (message on stderr), 2 bad flags.

Flags:
`

// runState runs "herald state": GET /v1/topics/{topic}/state.
func runState(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	topic, body, err := getTopicResource(ctx, "state", args, stdout, stateUsage)
	if err != nil {
		return err
	}
	var st struct {
		ID     string            `json:"id"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("failed to read the state of %s: %w", topic, err)
	}
	lines := make([]string, len(st.Events))
	for i, e := range st.Events {
		lines[i] = string(e)
	}
	if err := printLines(stdout, lines); err != nil {
		return err
	}
	keys := "keys"
	if len(st.Events) == 1 {
		keys = "key"
	}
	fmt.Fprintf(stderr, "state of %s at %s: %d %s\n", topic, st.ID, len(st.Events), keys)
	return nil
}

// getTopicResource runs a command that reads GET /v1/topics/{topic}/NAME
// (state, presence): its flags and TOPIC argument, then the request. It
// returns the topic and the answer's body.
func getTopicResource(ctx context.Context, name string, args []string, stdout io.Writer, usage string) (string, []byte, error) {
	var (
		rawURL, token string
		timeout       time.Duration
	)
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&token, "token", "", "`JWT` sent as Authorization: Bearer")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of the request")
	if err := parseCommand(fs, args, stdout, usage, "TOPIC"); err != nil {
		return "", nil, err
	}
	topic := fs.Arg(0)
	if err := hub.ValidateTopic(topic); err != nil {
		return "", nil, usagef("%v", err)
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return "", nil, err
	}
	if timeout <= 0 {
		return "", nil, usagef("--timeout must be positive, got %v", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := newAPIClient(base, token, timeout)
	defer c.close()
	_, body, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/"+name, nil, nil)
	return topic, body, err
}
