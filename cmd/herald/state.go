package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/heraldpush/herald/client"
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
	var st *client.State
	topic, err := topicCommand(ctx, "state", args, stdout, stateUsage, func(ctx context.Context, c *client.Client, topic string) (err error) {
		st, err = c.State(ctx, topic)
		return err
	})
	if err != nil {
		return err
	}
	lines := make([]string, len(st.Events))
	for i := range st.Events {
		lines[i] = string(st.Events[i].AppendJSON(nil))
	}
	if err := printLines(stdout, lines); err != nil {
		return err
	}
	keys := "keys"
	if len(st.Events) == 1 {
		keys = "key"
	}
	fmt.Fprintf(stderr, "state of %s at %s: %d %s\n", topic, st.Cursor, len(st.Events), keys)
	return nil
}

// topicCommand runs a command that reads one resource of a topic (state,
// presence): its flags and TOPIC argument, then read, with a client of the
// server and the topic. It returns the topic.
func topicCommand(ctx context.Context, name string, args []string, stdout io.Writer, usage string,
	read func(context.Context, *client.Client, string) error) (string, error) {
	var (
		rawURL, token string
		timeout       time.Duration
	)
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&token, "token", "", "`JWT` sent as Authorization: Bearer")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of the request")
	if err := parseCommand(fs, args, stdout, usage, "TOPIC"); err != nil {
		return "", err
	}
	topic := fs.Arg(0)
	if err := hub.ValidateTopic(topic); err != nil {
		return "", usagef("%v", err)
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return "", err
	}
	if timeout <= 0 {
		return "", usagef("--timeout must be positive, got %v", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dialAPI(ctx, base, token, "", timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := read(ctx, c, topic); err != nil {
		return "", commandError(base, err)
	}
	return topic, nil
}
