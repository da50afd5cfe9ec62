package ws_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/transport/ws"
)

// FuzzClientMessage sends arbitrary text messages to a real server over one
// connection. Whatever a message holds, the server must answer it (or, for
// a subscribe, take it) without closing the connection, crashing or
// hanging: a ping sent after it must still get its pong.
//
// Run long with: go test -run '^$' -fuzz FuzzClientMessage -fuzztime 10m ./transport/ws/
func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"op":"ping","ref":1}`,
		`{"op":"subscribe","ref":"s","topics":["a.*"],"since":"x-1"}`,
		`{"op":"subscribe","topics":[]}`,
		`{"op":"unsubscribe","topics":["a.>"]}`,
		`{"op":"publish","topic":"a.b","type":"t","data":{"x":[1,2]}}`,
		`{"op":"publish","topic":"a.*","data":1}`,
		`{"op":"action","type":"echo","topic":"a","payload":null,"idempotency_key":"k"}`,
		`{"op":"refresh","token":"x.y.z"}`,
		`{"op":"nope"}`, `{}`, `[]`, `null`, `"op"`, `{"op":1}`, `{"ref":{"a":[1]}}`,
		`{"op":"subscribe","topics":"a"}`, "{\"op\":\"ping\",\"ref\":\"\xff\"}", `{"op":"ping"`, "",
	} {
		f.Add(s)
	}
	e := newEnv(f, envOptions{ws: ws.Options{MessageRate: -1, PingInterval: -1}})
	c := e.dial(nil)
	f.Fuzz(func(t *testing.T, msg string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
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
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("after %q the server sent non-JSON %q", msg, b)
			}
			if m.Op == "pong" && string(m.Ref) == `"sentinel"` {
				return
			}
		}
	})
}
