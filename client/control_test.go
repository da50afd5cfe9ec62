package client

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

// TestControl: an operator's client disconnects and unsubscribes a user's
// subscriptions. Unsubscribing some patterns keeps the subscription with
// the others; a WebSocket disconnected (close 4001) ends its subscription
// with the "disconnected" error rather than reconnecting, as herald.js
// does; a non-admin client is refused.
func TestControl(t *testing.T) {
	const key = "backend-key-0123456789"
	node := start(t, server.Config{Auth: "jwt", JWTSecret: secret, APIKey: key})
	ctx := testCtx(t)
	admin := dial(t, node.URL, Options{APIKey: key})
	alice := dial(t, node.URL, Options{Token: token(t, "alice", time.Hour)})
	sub, err := alice.Subscribe(ctx, []string{"open.a", "open.b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := admin.Unsubscribe(ctx, Target{User: "alice"}, []string{"open.a"})
	if err != nil || n != 1 {
		t.Fatalf("Unsubscribe: %d, %v; want 1 connection", n, err)
	}
	// open.a's event is no longer delivered; open.b's still is.
	if _, err := admin.Publish(ctx, "open.a", "", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Publish(ctx, "open.b", "", 2); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, sub); e.Topic != "open.b" {
		t.Fatalf("after unsubscribing open.a, got an event of %s, want open.b's", e.Topic)
	}

	if _, err := alice.Disconnect(ctx, Target{User: "alice"}); err == nil {
		t.Fatal("a client without the admin grant disconnected a user")
	}
	n, err = admin.Disconnect(ctx, Target{Client: sub.ClientID()})
	if err != nil || n != 1 {
		t.Fatalf("Disconnect: %d, %v; want 1 connection", n, err)
	}
	select {
	case <-sub.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the subscription went on after its WebSocket was disconnected")
	}
	var ce *Error
	if err := sub.Err(); !errors.As(err, &ce) || ce.Code != "disconnected" {
		t.Fatalf("the subscription ended with %v, want the disconnected error", err)
	}
	if _, err := admin.Disconnect(ctx, Target{}); err == nil {
		t.Fatal("Disconnect without a target was sent")
	}
}
