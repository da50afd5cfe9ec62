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
	"time"

	"github.com/heraldpush/herald/client"
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
	c, err := dialAPI(ctx, base, token, "", timeout)
	if err != nil {
		return err
	}
	defer c.Close()

	if dataSet {
		ids, err := c.PublishBatch(ctx, []client.Draft{{Topic: topic, Type: typ, Data: json.RawMessage(data)}})
		if err != nil {
			return commandError(base, err)
		}
		return printLines(stdout, ids)
	}
	return pubStream(ctx, c, base, stdin, stdout, topic, typ, batch)
}

// pubStream publishes the NDJSON lines of stdin in batches, printing the
// cursors of each batch as soon as it is published. A batch is sent when it
// is full or when no more input is buffered, so that a slow producer
// (tail -f) sees its events published at once.
func pubStream(ctx context.Context, c *client.Client, base string, stdin io.Reader, stdout io.Writer, topic, typ string, batch int) error {
	br := bufio.NewReaderSize(stdin, 64<<10)
	var (
		pending   []client.Draft
		size      int
		published int
		lineNo    int
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		ids, err := c.PublishBatch(ctx, pending)
		if err != nil {
			err = commandError(base, err)
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
			n := len(ev.Topic) + len(ev.Type) + len(ev.Data.(json.RawMessage)) + 48
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

// parsePubLine turns one non-blank input line into an event. Its data is
// a json.RawMessage: it goes to the server as written.
func parsePubLine(line []byte, topic, typ string) (client.Draft, error) {
	if !json.Valid(line) {
		var v any
		err := json.Unmarshal(line, &v)
		return client.Draft{}, fmt.Errorf("not valid JSON: %v", err)
	}
	if line[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err == nil {
			if t, ok := obj["topic"]; ok {
				ev := client.Draft{Type: typ, Data: json.RawMessage("null")}
				if err := json.Unmarshal(t, &ev.Topic); err != nil {
					return client.Draft{}, errors.New(`"topic" is not a string`)
				}
				if t, ok := obj["type"]; ok && string(t) != "null" {
					if err := json.Unmarshal(t, &ev.Type); err != nil {
						return client.Draft{}, errors.New(`"type" is not a string`)
					}
				}
				if d, ok := obj["data"]; ok {
					ev.Data = d
				}
				return ev, nil
			}
		}
	}
	if topic == "" {
		return client.Draft{}, errors.New(`not an event object with "topic", and --topic is not given`)
	}
	return client.Draft{Topic: topic, Type: typ, Data: json.RawMessage(bytes.Clone(line))}, nil
}
