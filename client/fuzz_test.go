package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Any envelope the server writes reads back to its fields, and any other
// bytes read as an event or an error, never a panic; an event's envelope
// (AppendJSON, herald sub's line) is one line, of valid JSON when its data
// is.
func FuzzEnvelope(f *testing.F) {
	f.Add("orders.42", "order.created", "", `{"total":99.5}`, uint64(7), []byte(`"id":"e-1","topic":"t","type":"m","data":1,"time":"2026-01-01T00:00:00Z"}`))
	f.Add("t", "m", "k:1", `"a,\"time\":\"x"`, uint64(1), []byte(`"id":"e-1","topic":"t","type":"m","key":"k","delta":"3\n1:x","time":"2026-01-01T00:00:00Z"}`))
	f.Add("a.b", "x", "k", `null`, uint64(0), []byte(`"id":"e-1","topic":"t\u0041","type":"m","data":{},"time":"bad"}`))
	f.Add("t", "m", "", `1`, uint64(2), []byte("\"id\":\"e-1\",\"topic\":\"t\",\"type\":\"m\",\"data\":1}\n{\"id\":\"forged\",\"topic\":\"t\",\"type\":\"m\",\"data\":2,\"time\":\"2026-01-01T00:00:00Z\"}"))
	f.Add("t", "m", "", `1`, uint64(3), []byte("\"id\":\"e-1\n\",\"topic\":\"t\",\"type\":\"m\",\"delta\":\"a\"b\",\"time\":\"2026-01-01T00:00:00Z\"}"))
	f.Fuzz(func(t *testing.T, topic, typ, key, data string, seq uint64, raw []byte) {
		if e, err := parseEnvelope(raw); err == nil {
			if e.ID == "" || e.Topic == "" || (e.Data == nil) == (e.delta == nil) {
				t.Fatalf("%q read as %+v", raw, e)
			}
			if e.delta == nil {
				line := e.AppendJSON(nil)
				if bytes.IndexAny(line, "\r\n") >= 0 || json.Valid(e.Data) && !json.Valid(line) {
					t.Fatalf("%q read as an event whose envelope is %q", raw, line)
				}
			}
		}
		d := hub.Draft{Topic: topic, Type: typ, Key: key, Data: json.RawMessage(data)}
		if d.Normalize() != nil {
			return
		}
		want := hub.Event{ID: hub.Cursor{Epoch: "fuzzepoch", Seq: seq}, Topic: d.Topic, Type: d.Type, Key: d.Key,
			Data: d.Data, Time: time.Unix(int64(seq%1e10), int64(seq%1e9)).UTC()}
		env := want.AppendJSON(nil)
		got, err := parseEnvelope(env[1:])
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		if got.delta != nil || got.ID != want.ID.String() || got.Topic != want.Topic || got.Type != want.Type ||
			got.Key != want.Key || !bytes.Equal(got.Data, want.Data) || !got.Time.Equal(want.Time) {
			t.Fatalf("%s read as %+v", env, got)
		}
		if back := got.AppendJSON(nil); !bytes.Equal(back, env) {
			t.Fatalf("AppendJSON: %s, want %s", back, env)
		}
	})
}

// Any byte stream, read as SSE and as WebSocket messages, ends in events
// or an error: never a panic, never more than the size bound.
func FuzzStream(f *testing.F) {
	f.Add([]byte("id: e-1\nevent: m\ndata: {\"id\":\"e-1\",\"topic\":\"t\",\"type\":\"m\",\"data\":1,\"time\":\"2026-01-01T00:00:00Z\"}\n\n"))
	f.Add([]byte("event: herald.reset\nid: e-9\ndata: {\"reason\":\"history_gone\",\"topics\":[\"t\"]}\n\n: ping\r\n\r\n"))
	f.Add([]byte("event: herald.synced\nid: e-9\ndata: {\"topics\":[\"t\"]}\n\ndata: x\ndata: y\n\n"))
	f.Add([]byte(`{"op":"event","id":"e-2","topic":"t","type":"m","key":"k","delta":"1\n","time":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"op":"ok","ref":"s","client":"c-1"}`))
	f.Add([]byte("retry: 2000\n\nid: e-0\n\nid: e-1\nevent: m\ndata: {\"id\":\"e-1\",\"topic\":\"t\",\"type\":\"m\",\"data\":1,\"time\":\"2026-01-01T00:00:00Z\"}\n\n"))
	f.Add([]byte(`{"op":"ok","ref":"s","client":"c-1","id":"e-0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := benchSubscription()
		s.opts.Delta, s.opts.State = true, true
		s.msgs = make(chan Message, len(b)+2) // room for every event: nothing blocks
		r := newSSEReader(bytes.NewReader(b), 256)
		for i := 0; ; i++ {
			typ, id, data, err := r.next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && err != errTooLong {
					t.Fatalf("stream %q: %v", b, err)
				}
				break
			}
			if len(data) > 256 || i > len(b) {
				t.Fatalf("event %d of %q: %d bytes", i, b, len(data))
			}
			_ = s.sseEvent(ctx, typ, id, data)
		}
		_ = s.wsMessage(ctx, b)
	})
}
