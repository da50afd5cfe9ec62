package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
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
	c := newAPIClient(base, token, 0)
	defer c.close()

	body := struct {
		Type    string          `json:"type"`
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload,omitempty"`
	}{typ, topic, nil}
	if payload != "" {
		body.Payload = json.RawMessage(payload)
	}
	b, _ := json.Marshal(body)
	var hdr http.Header
	if key != "" {
		hdr = http.Header{"Idempotency-Key": {key}}
	}
	status, resp, err := c.do(ctx, http.MethodPost, "/v1/actions", b, hdr)
	if err != nil {
		return timeoutErr(ctx, err, timeout, "submitting the action")
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		return fmt.Errorf("unexpected answer to POST /v1/actions: HTTP %d", status)
	}
	var doc actionDoc
	if err := json.Unmarshal(resp, &doc); err != nil || doc.ID == "" {
		return fmt.Errorf("unexpected answer to POST /v1/actions: %.200s", resp)
	}
	if !waitDone {
		return printLines(stdout, []string{doc.ID})
	}
	// A repeat with an idempotency key (200) already carries the status.
	if status != http.StatusOK || !doc.final() {
		if resp, doc, err = c.waitAction(ctx, doc.ID); err != nil {
			return timeoutErr(ctx, err, timeout, "waiting for action "+doc.ID+" to finish")
		}
	}
	var line bytes.Buffer
	if err := json.Compact(&line, resp); err != nil {
		return fmt.Errorf("unexpected status document: %.200s", resp)
	}
	if err := printLines(stdout, []string{line.String()}); err != nil {
		return err
	}
	if doc.Status == "failed" {
		if doc.Error != nil {
			return fmt.Errorf("action failed: %s: %s", doc.Error.Code, doc.Error.Message)
		}
		return errors.New("action failed")
	}
	return nil
}

// actionDoc is the part of an action's status document the command reads.
type actionDoc struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (d actionDoc) final() bool { return d.Status == "succeeded" || d.Status == "failed" }

// waitAction polls the action's status, 50 ms apart at first and then
// doubling up to 1 s, until it is final or ctx ends. It returns the raw
// final document. On error the returned doc still carries the ID and the
// last status seen.
func (c *apiClient) waitAction(ctx context.Context, id string) ([]byte, actionDoc, error) {
	doc := actionDoc{ID: id}
	delay := 50 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, doc, fmt.Errorf("last status %q: %w", doc.Status, ctx.Err())
		case <-timer.C:
		}
		status, body, err := c.do(ctx, http.MethodGet, "/v1/actions/"+url.PathEscape(id), nil, nil)
		if err != nil {
			return nil, doc, err
		}
		if status != http.StatusOK {
			return nil, doc, fmt.Errorf("unexpected answer to GET /v1/actions/%s: HTTP %d", id, status)
		}
		var d actionDoc
		if err := json.Unmarshal(body, &d); err != nil {
			return nil, doc, fmt.Errorf("unexpected status document: %.200s", body)
		}
		doc.Status, doc.Error = d.Status, d.Error
		if doc.final() {
			return body, doc, nil
		}
		timer.Reset(delay)
		delay = min(2*delay, time.Second)
	}
}

// timeoutErr names the --timeout when it is what ended err.
func timeoutErr(ctx context.Context, err error, timeout time.Duration, doing string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %v %s (--timeout): %w", timeout, doing, err)
	}
	return err
}
