package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// subLog turns the client package's log into herald sub's diagnostics on
// stderr: one line per record, the connection's progress worded for
// people ("subscribed to … as …", "disconnected: …; reconnecting in …").
// Resets and synced markers are not taken from it: sub prints them from
// the subscription's messages. Its Handle may be called from the
// subscription's goroutine while the caller writes to w too: each line is
// one Write.
type subLog struct{ w io.Writer }

func newStderrLogger(w io.Writer) *slog.Logger { return slog.New(subLog{w}) }

func (subLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h subLog) WithAttrs([]slog.Attr) slog.Handler         { return h }
func (h subLog) WithGroup(string) slog.Handler              { return h }

func (h subLog) Handle(_ context.Context, r slog.Record) error {
	var attrs []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, slog.Attr{Key: a.Key, Value: a.Value.Resolve()})
		return true
	})
	get := func(k string) slog.Value {
		for _, a := range attrs {
			if a.Key == k {
				return a.Value
			}
		}
		return slog.Value{}
	}
	var line string
	switch r.Message {
	case "subscribed":
		topics, _ := get("topics").Any().([]string)
		line = fmt.Sprintf("subscribed to %s as %s", strings.Join(topics, " "), get("client"))
	case "disconnected":
		line = fmt.Sprintf("disconnected: %v; reconnecting in %v", get("err"), get("retry_in").Duration().Round(time.Millisecond))
	case "unsubscribed by the server":
		topics, _ := get("topics").Any().([]string)
		line = "unsubscribed by the server from " + strings.Join(topics, " ")
	case "reset", "synced":
		return nil
	default:
		var b strings.Builder
		b.WriteString(r.Message)
		for _, a := range attrs {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		}
		line = b.String()
	}
	_, err := io.WriteString(h.w, line+"\n")
	return err
}
