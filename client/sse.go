package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// sessionSSE runs one SSE stream until it ends.
func (s *Subscription) sessionSSE(ctx context.Context) error {
	q := url.Values{"topic": s.patterns}
	if s.opts.State {
		q.Set("state", "1") // with a cursor, the server sends it again only after a reset
	}
	if !s.haveLast && s.opts.Rewind > 0 {
		q.Set("rewind", strconv.Itoa(s.opts.Rewind))
	}
	if s.opts.Presence {
		q.Set("presence", "1")
	}
	if s.opts.PresenceEvents {
		q.Set("presence_events", "1")
	}
	if s.opts.Delta {
		q.Set("delta", "fossil")
	}
	if s.opts.Conflate > 0 {
		q.Set("conflate", s.opts.Conflate.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.c.url("/v1/events")+"?"+q.Encode(), nil)
	if err != nil {
		return &Error{Code: "invalid_request", Message: err.Error()}
	}
	h, err := s.c.header(ctx)
	if err != nil {
		return err
	}
	req.Header = h
	req.Header.Set("Accept", "text/event-stream")
	if s.haveLast {
		req.Header.Set("Last-Event-ID", s.last.String())
	}
	resp, err := s.c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("failed to connect: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return answerError(resp, body)
	}
	// The server answers at once; what follows may take a while (a
	// server without start blocks confirms with its first event), and is
	// the idle timeout's to bound.
	s.wd.confirmed()
	client := resp.Header.Get("Herald-Client")
	// A stream without a cursor or state starts with a block of only its
	// start cursor: the subscription is confirmed once it has that, so that
	// a cut at any point after Subscribe returns resumes from a cursor. (A
	// server that sends none confirms it with its first event instead.)
	pending := !s.haveLast && !s.opts.State
	if !pending {
		s.up(client)
	}
	s.holdAll()
	r := newSSEReader(resp.Body, s.c.opts.MaxMessage)
	r.wd = s.wd
	for {
		typ, id, data, err := r.next()
		if err != nil {
			if err == io.EOF {
				return errors.New("the server ended the stream")
			}
			return fmt.Errorf("failed to read stream: %w", err)
		}
		if pending {
			pending = false
			s.up(client)
		}
		if err := s.sseEvent(ctx, typ, id, data); err != nil {
			return err
		}
	}
}

// sseEvent handles one SSE event, or a block of only an id (data nil); its
// slices are reused for the next one.
func (s *Subscription) sseEvent(ctx context.Context, typ, id, data []byte) error {
	if data == nil {
		return s.startAt(string(id))
	}
	switch string(typ) {
	case "herald.reset":
		var r struct {
			Reason string   `json:"reason"`
			Topics []string `json:"topics"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("failed to read reset: %w", err)
		}
		return s.reset(ctx, string(id), r.Reason, r.Topics)
	case "herald.unsubscribed":
		var u struct {
			Topics []string `json:"topics"`
		}
		if err := json.Unmarshal(data, &u); err != nil {
			return fmt.Errorf("failed to read unsubscribed: %w", err)
		}
		return s.unsubscribed(u.Topics)
	case "herald.synced":
		var sy struct {
			Topics []string `json:"topics"`
		}
		if err := json.Unmarshal(data, &sy); err != nil {
			return fmt.Errorf("failed to read synced: %w", err)
		}
		return s.synced(ctx, string(id), sy.Topics)
	}
	if len(data) < 2 || data[0] != '{' {
		return fmt.Errorf("failed to read event: %w: %.100q", errMalformed, data)
	}
	e, err := parseEnvelope(data[1:])
	if err != nil {
		return fmt.Errorf("failed to read event: %w", err)
	}
	return s.event(ctx, e)
}

// sseReader reads the events of a text/event-stream into buffers of its
// own, reused from one event to the next: reading allocates nothing per
// event.
type sseReader struct {
	br            *bufio.Reader
	max           int
	long          []byte // a line longer than br's buffer
	typ, id, data []byte
	// wd hears of every line, the server's ": ping" comments too: whole
	// lines, so that a server trickling bytes that never end one looks
	// as idle as it is.
	wd *watchdog
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 32<<10), max: max}
}

var errTooLong = errors.New("event too long")

// next returns the next event (a block with a data field): its type ("" for
// none), its id and its data lines joined by newlines (never nil). A block
// with an id and no data, which dispatches no event but sets EventSource's
// lastEventId, comes back with nil data. Comments, retry lines and other
// blocks without data are skipped. A stream that ends inside a block ends
// with io.ErrUnexpectedEOF, never a truncated event.
func (r *sseReader) next() (typ, id, data []byte, err error) {
	r.typ, r.id, r.data = r.typ[:0], r.id[:0], r.data[:0]
	hasData := false
	started := false
	for {
		line, err := r.line()
		if err != nil {
			if err == io.EOF && started {
				err = io.ErrUnexpectedEOF
			}
			return nil, nil, nil, err
		}
		if len(line) == 0 {
			if hasData {
				if r.data == nil {
					r.data = []byte{} // only once: r.data[:0] stays non-nil
				}
				return r.typ, r.id, r.data, nil
			}
			if len(r.id) > 0 {
				return nil, r.id, nil, nil
			}
			r.typ, r.id, started = r.typ[:0], r.id[:0], false
			continue
		}
		started = true
		if line[0] == ':' {
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			if hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > r.max {
				return nil, nil, nil, errTooLong
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.typ = append(r.typ[:0], value...)
		case "id":
			r.id = append(r.id[:0], value...)
		}
	}
}

// line returns the next line without its end (LF, CRLF). It is valid until
// the next call.
func (r *sseReader) line() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(r.long) > r.max+64 {
				return nil, errTooLong
			}
			line, err = r.br.ReadSlice('\n')
			r.long = append(r.long, line...)
		}
		line = r.long
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.wd.touch()
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
