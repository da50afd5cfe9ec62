package ws_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/transport/ws"
)

// FuzzClientMessage sends arbitrary text messages to a real server over one
// connection. Whatever a message holds, the server must answer it (or, for
// a subscribe, take it) without closing the connection, crashing or
// hanging: a ping sent after it must still get its pong. Every answer is
// JSON and UTF-8. The exception is a message that is not UTF-8: it goes on
// a connection of its own, which the server must close with 1007.
//
// Run long with: go test -run '^$' -fuzz FuzzClientMessage -fuzztime 10m ./transport/ws/
func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"op":"ping","ref":1}`,
		`{"op":"subscribe","ref":"s","topics":["a.*"],"since":"x-1"}`,
		`{"op":"subscribe","topics":[]}`,
		`{"op":"subscribe","ref":"r","topics":["a.>","b"],"rewind":5}`,
		`{"op":"subscribe","topics":["a"],"rewind":1000,"since":"x-1"}`,
		`{"op":"subscribe","topics":["a"],"rewind":1.5}`, `{"op":"subscribe","topics":["a"],"rewind":"7"}`,
		`{"op":"subscribe","topics":["a"],"rewind":-1}`, `{"op":"subscribe","topics":["a"],"rewind":1e400}`,
		`{"op":"subscribe","topics":["a"],"rewind":null}`, `{"op":"subscribe","topics":["a"],"rewind":{"n":1}}`,
		`{"op":"subscribe","topics":["a"],"presence":true,"info":{"n":"x"},"presence_events":true}`,
		`{"op":"subscribe","topics":["a.*"],"presence":true}`, `{"op":"subscribe","topics":["a"],"presence":"1"}`,
		`{"op":"subscribe","topics":["a"],"presence":true,"info":[1]}`, `{"op":"subscribe","topics":["a"],"presence":null,"info":7}`,
		`{"op":"subscribe","topics":["a"],"presence":true,"info":{"a":"\u0000\ud800"}}`,
		`{"op":"subscribe","topics":["a"],"presence_events":{}}`, `{"op":"subscribe","topics":["a",">"],"presence_events":true}`,
		`{"op":"subscribe","ref":"st","topics":["a.*"],"state":true}`,
		`{"op":"subscribe","topics":["a"],"state":true,"since":"x-1","rewind":3}`,
		`{"op":"subscribe","topics":["a"],"state":"yes"}`, `{"op":"subscribe","topics":["a"],"state":1}`,
		`{"op":"subscribe","topics":["a"],"state":null}`, `{"op":"subscribe","topics":["a"],"state":false}`,
		`{"op":"unsubscribe","topics":["a.>"]}`,
		`{"op":"publish","topic":"a.b","type":"t","data":{"x":[1,2]}}`,
		`{"op":"publish","topic":"a.*","data":1}`,
		`{"op":"action","type":"echo","topic":"a","payload":null,"idempotency_key":"k"}`,
		`{"op":"refresh","token":"x.y.z"}`,
		`{"op":"nope"}`, `{}`, `[]`, `null`, `"op"`, `{"op":1}`, `{"ref":{"a":[1]}}`,
		`{"op":"subscribe","topics":"a"}`, "{\"op\":\"ping\",\"ref\":\"\xff\"}", `{"op":"ping"`, "",
		`{"op":"ping","ref":"\ud800"}`, "{\"op\":\"nope\xc3\",\"ref\":[\"\xe2\x82\"]}",
	} {
		f.Add(s)
	}
	e := newEnv(f, envOptions{ws: ws.Options{MessageRate: -1, PingInterval: -1}})
	c := e.dial(nil)
	f.Fuzz(func(t *testing.T, msg string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if !utf8.ValidString(msg) {
			own, err := e.tryDial(t, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if err := own.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatalf("write: %v", err)
			}
			if got := own.closeStatus(10 * time.Second); got != websocket.StatusInvalidFramePayloadData {
				t.Fatalf("after %q: close status %v, want 1007", msg, got)
			}
			return
		}
		if err := c.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping","ref":"sentinel"}`)); err != nil {
			t.Fatalf("write the ping: %v", err)
		}
		for {
			_, b, err := c.c.Read(ctx)
			if err != nil {
				t.Fatalf("after %q the connection failed: %v", msg, err)
			}
			var m struct {
				Op  string          `json:"op"`
				Ref json.RawMessage `json:"ref"`
			}
			if !utf8.Valid(b) {
				t.Fatalf("after %q the server sent a text message that is not UTF-8: %q", msg, b)
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("after %q the server sent non-JSON %q", msg, b)
			}
			if m.Op == "pong" && string(m.Ref) == `"sentinel"` {
				return
			}
		}
	})
}
