package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/heraldpush/herald/client"
)

const actionUsage = `Usage: herald action --type TYPE --topic TOPIC [--payload JSON] [--wait] [flags]

Submits an action and prints its ID. With --wait, waits for the action to finish
and prints its final status document (as GET /v1/actions/ID returns it) as one
line of JSON instead.

Exit status: 0 submitted (with --wait: succeeded), 1 an error, a failed action
or --timeout passed (message on stderr), 2 bad flags.

Flags:
`

// runAction runs "herald action": submit an action, print its id, and with
// --wait wait for its result.
func runAction(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		rawURL, typ, topic, payload, key, token string
		waitDone                                bool
		timeout                                 time.Duration
	)
	fs := flag.NewFlagSet("herald action", flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&typ, "type", "", "action `TYPE` (required)")
	fs.StringVar(&topic, "topic", "", "`TOPIC` the result is published to (required)")
	fs.StringVar(&payload, "payload", "", "action payload as `JSON` (default null)")
	fs.StringVar(&key, "idempotency-key", "", "`KEY` so that a repeated submit runs the action once")
	fs.BoolVar(&waitDone, "wait", false, "wait for the result and print the final status")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of the whole command, waiting included")
	fs.StringVar(&token, "token", "", "`JWT` sent as Authorization: Bearer")
	if err := parseFlags(fs, args, stdout, actionUsage); err != nil {
		return err
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return err
	}
	switch {
	case typ == "":
		return usagef("--type is required")
	case topic == "":
		return usagef("--topic is required")
	case payload != "" && !json.Valid([]byte(payload)):
		return usagef("--payload is not valid JSON")
	case timeout <= 0:
		return usagef("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dialAPI(ctx, base, token, "", 0)
	if err != nil {
		return err
	}
	defer c.Close()

	var body any // null, as the server reads no payload
	if payload != "" {
		body = json.RawMessage(payload)
	}
	// Without --wait nothing reads the result: no subscription.
	h, err := c.Action(ctx, typ, topic, body, &client.ActionOptions{IdempotencyKey: key, NoSubscribe: !waitDone})
	if err != nil {
		return timeoutErr(ctx, commandError(base, err), timeout, "submitting the action")
	}
	defer h.Close()
	if !waitDone {
		return printLines(stdout, []string{h.ID})
	}
	if _, err := h.Wait(ctx); err != nil {
		return timeoutErr(ctx, commandError(base, err), timeout, "waiting for action "+h.ID+" to finish")
	}
	// The status document, as GET /v1/actions/ID returns it.
	st, err := c.ActionStatus(ctx, h.ID)
	if err != nil {
		return timeoutErr(ctx, commandError(base, err), timeout, "reading the status of action "+h.ID)
	}
	var line bytes.Buffer
	if err := json.Compact(&line, st.Raw); err != nil {
		return fmt.Errorf("unexpected status document: %.200s", st.Raw)
	}
	if err := printLines(stdout, []string{line.String()}); err != nil {
		return err
	}
	if st.Status == "failed" {
		if st.Error != nil {
			return fmt.Errorf("action failed: %s: %s", st.Error.Code, st.Error.Message)
		}
		return errors.New("action failed")
	}
	return nil
}

// timeoutErr names the --timeout when it is what ended err.
func timeoutErr(ctx context.Context, err error, timeout time.Duration, doing string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %v %s (--timeout): %w", timeout, doing, err)
	}
	return err
}
