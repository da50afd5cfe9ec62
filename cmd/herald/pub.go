package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// pubMaxLine bounds one line of NDJSON read from stdin, so that input
	// without newlines cannot grow memory without limit.
	pubMaxLine = 16 << 20
	// pubMaxBatchBytes bounds the body of one batch publish below the
	// server's default --max-body (1 MiB). A single larger event is still
	// sent alone, and the server decides.
	pubMaxBatchBytes = 512 << 10
)

const pubUsage = `Usage: herald pub --topic TOPIC [--type TYPE] [--data JSON] [flags]
       herald pub [--topic TOPIC] --stdin < events.ndjson

Publishes events and prints the cursor of each, one per line, in input order.

With --data, publishes that one event. Without --data (or with --stdin), reads
NDJSON from stdin: a line that is an object with "topic" is a whole event
{"topic","type","data"} (type defaults to --type); any other line is the data of
an event on --topic. Blank lines are skipped. Lines are sent in batches, in order.
On an invalid line, the events before it are published and nothing after it is.

Exit status: 0 all published, 1 an error (message on stderr), 2 bad flags.

Flags:
`

// runPub runs "herald pub": publish events and print their cursors.
func runPub(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var (
		rawURL, topic, typ, data, token string
		useStdin                        bool
		batch                           int
		timeout                         time.Duration
	)
	fs := flag.NewFlagSet("herald pub", flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&topic, "topic", "", "`TOPIC` to publish to (default topic of stdin lines)")
	fs.StringVar(&typ, "type", "", "event `TYPE` (the server's default is \"message\")")
	fs.StringVar(&data, "data", "", "event data as `JSON`; without it, events are read from stdin")
	fs.StringVar(&token, "token", "", "`JWT` sent as Authorization: Bearer")
	fs.BoolVar(&useStdin, "stdin", false, "read NDJSON events from stdin")
	fs.IntVar(&batch, "batch", 100, "at most `N` events per publish request (1 to 1000)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of each request")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, pubUsage)
			fs.PrintDefaults()
			return err
		}
		return usagef("%v (see \"herald pub -h\")", err)
	}
	if fs.NArg() > 0 {
		return usagef("pub takes no arguments, got %q (see \"herald pub -h\")", fs.Arg(0))
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return err
	}
	dataSet := false
	fs.Visit(func(f *flag.Flag) { dataSet = dataSet || f.Name == "data" })
	switch {
	case batch < 1 || batch > 1000:
		return usagef("--batch must be between 1 and 1000")
	case timeout <= 0:
		return usagef("--timeout must be positive")
	case dataSet && useStdin:
		return usagef("give --data or --stdin, not both")
	case dataSet && topic == "":
		return usagef("--data needs --topic")
	case dataSet && !json.Valid([]byte(data)):
		return usagef("--data is not valid JSON")
	case !dataSet && !useStdin && topic == "":
		return usagef("--topic is required (or --stdin with whole event objects)")
	}
	c := newAPIClient(base, token, timeout)
	defer c.close()

	if dataSet {
		ev := pubEvent{Topic: jsonString(topic), Data: json.RawMessage(data)}
		if typ != "" {
			ev.Type = jsonString(typ)
		}
		ids, err := c.publish(ctx, []pubEvent{ev})
		if err != nil {
			return err
		}
		return printLines(stdout, ids)
	}
	return pubStream(ctx, c, stdin, stdout, topic, typ, batch)
}

// pubEvent is one event of a publish body. The fields are raw so that an
// input line's values reach the server as written, for it to validate.
type pubEvent struct {
	Topic json.RawMessage `json:"topic"`
	Type  json.RawMessage `json:"type,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// pubStream publishes the NDJSON lines of stdin in batches, printing the
// cursors of each batch as soon as it is published. A batch is sent when it
// is full or when no more input is buffered, so that a slow producer
// (tail -f) sees its events published at once.
func pubStream(ctx context.Context, c *apiClient, stdin io.Reader, stdout io.Writer, topic, typ string, batch int) error {
	br := bufio.NewReaderSize(stdin, 64<<10)
	var (
		pending   []pubEvent
		size      int
		published int
		lineNo    int
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		ids, err := c.publish(ctx, pending)
		if err != nil {
			if published > 0 {
				return fmt.Errorf("%w; the first %d events were published, nothing after them", err, published)
			}
			return err
		}
		published += len(ids)
		pending, size = pending[:0], 0
		return printLines(stdout, ids)
	}
	// lineErr reports a bad input line after publishing the lines before it.
	lineErr := func(format string, args ...any) error {
		if err := flush(); err != nil {
			return err
		}
		msg := fmt.Sprintf("line %d: ", lineNo) + fmt.Sprintf(format, args...)
		if published == 0 {
			return errors.New(msg + "; nothing was published")
		}
		return fmt.Errorf("%s; the %d events before it were published, nothing after it", msg, published)
	}
	for {
		line, rerr := readLine(br)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			lineNo++
			return lineErr("%v", rerr)
		}
		if len(line) > 0 || rerr == nil {
			lineNo++
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			ev, err := parsePubLine(line, topic, typ)
			if err != nil {
				return lineErr("%v", err)
			}
			n := len(ev.Topic) + len(ev.Type) + len(ev.Data) + 32
			if len(pending) > 0 && size+n > pubMaxBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			pending = append(pending, ev)
			size += n
			if len(pending) >= batch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr != nil { // io.EOF
			return flush()
		}
		if br.Buffered() == 0 {
			// The next read may block: publish what we have first.
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// readLine returns the next line without its newline, at most pubMaxLine
// bytes. At the end of the input it returns the last line (possibly empty)
// with io.EOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > pubMaxLine {
			return nil, fmt.Errorf("line is longer than %d bytes", pubMaxLine)
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), err
	}
}

// parsePubLine turns one non-blank input line into an event.
func parsePubLine(line []byte, topic, typ string) (pubEvent, error) {
	if !json.Valid(line) {
		var v any
		err := json.Unmarshal(line, &v)
		return pubEvent{}, fmt.Errorf("not valid JSON: %v", err)
	}
	if line[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err == nil {
			if t, ok := obj["topic"]; ok {
				ev := pubEvent{Topic: t, Type: obj["type"], Data: obj["data"]}
				if ev.Type == nil && typ != "" {
					ev.Type = jsonString(typ)
				}
				return ev, nil
			}
		}
	}
	if topic == "" {
		return pubEvent{}, errors.New(`not an event object with "topic", and --topic is not given`)
	}
	ev := pubEvent{Topic: jsonString(topic), Data: json.RawMessage(bytes.Clone(line))}
	if typ != "" {
		ev.Type = jsonString(typ)
	}
	return ev, nil
}

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
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, actionUsage)
			fs.PrintDefaults()
			return err
		}
		return usagef("%v (see \"herald action -h\")", err)
	}
	if fs.NArg() > 0 {
		return usagef("action takes no arguments, got %q (see \"herald action -h\")", fs.Arg(0))
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

// publish sends events as one batch and returns their cursors in order.
func (c *apiClient) publish(ctx context.Context, events []pubEvent) ([]string, error) {
	body, err := json.Marshal(struct {
		Events []pubEvent `json:"events"`
	}{events})
	if err != nil {
		return nil, fmt.Errorf("failed to encode events: %w", err)
	}
	_, resp, err := c.do(ctx, http.MethodPost, "/v1/publish", body, nil)
	if err != nil {
		return nil, err
	}
	var out struct{ IDs []string }
	if err := json.Unmarshal(resp, &out); err != nil || len(out.IDs) != len(events) {
		return nil, fmt.Errorf("unexpected answer to POST /v1/publish: %.200s", resp)
	}
	return out.IDs, nil
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

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
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
