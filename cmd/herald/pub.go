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
	"net/http"
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
	if err := parseFlags(fs, args, stdout, pubUsage); err != nil {
		return err
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

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
