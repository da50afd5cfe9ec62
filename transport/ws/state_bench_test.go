package ws_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkStateSubscribe measures a subscribe with state to a topic of
// 10,000 keys on the memory broker, from the subscribe message until a
// real WebSocket client over loopback has read the synced frame: the
// snapshot, 10,000 state events paced into the queue and written, and the
// synced. One op is one such subscribe on a connection of its own.
//
//	go test -run '^$' -bench StateSubscribe -benchtime 20x ./transport/ws/
func BenchmarkStateSubscribe(b *testing.B) {
	const keys = 10000
	e := newEnv(b, envOptions{})
	data := []byte(`{"line":42,"col":7,"user":"alice"}`)
	for i := range keys {
		if _, err := e.hub.Publish(context.Background(), hub.Draft{Topic: "doc.7", Key: fmt.Sprintf("user:%d", i), Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	sub := []byte(`{"op":"subscribe","ref":1,"topics":["doc.7"],"state":true}`)
	synced := []byte(`{"op":"synced"`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c := e.dial(nil)
		b.StartTimer()
		if err := c.c.Write(c.rc, websocket.MessageText, sub); err != nil {
			b.Fatal(err)
		}
		events := 0
		for {
			_, msg, err := c.c.Read(c.rc)
			if err != nil {
				b.Fatal(err)
			}
			if bytes.HasPrefix(msg, synced) {
				break
			}
			if bytes.HasPrefix(msg, []byte(`{"op":"event"`)) {
				events++
			}
		}
		if events != keys {
			b.Fatalf("%d state events before the synced, want %d", events, keys)
		}
		b.StopTimer()
		c.c.CloseNow()
		b.StartTimer()
	}
}
