package redisbroker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestPresenceRevivedNode: a node that cannot refresh its heartbeat for
// longer than its TTL (as when cut off from Redis) is taken for dead and
// its members leave; when it can again, it finds its heartbeat expired and
// its hub joins them again, each with the member it had.
func TestPresenceRevivedNode(t *testing.T) {
	bs := newCluster(t, 2, brokertest.Options{NodeTTL: 600 * time.Millisecond})
	hubs := make([]*hub.Hub, 2)
	for i, b := range bs {
		h, err := hub.New(hub.Options{Broker: b})
		if err != nil {
			t.Fatal(err)
		}
		hubs[i] = h
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := h.Close(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	c, err := hubs[0].NewClient("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("room")}, Presence: true,
		User: "ann", Info: json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	want := `{"client":"` + c.ConnID() + `","user":"ann","info":{"x":1}}`
	members := func() []string {
		p, err := hubs[1].Presence(context.Background(), "room")
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(p.Members))
		for i, m := range p.Members {
			out[i] = string(m)
		}
		return out
	}
	wait.For(t, 10*time.Second, "the join", func() bool { m := members(); return len(m) == 1 && m[0] == want })
	redisbroker.Pause(bs[0].(*redisbroker.Broker), true)
	wait.For(t, 10*time.Second, "the sweep", func() bool { return len(members()) == 0 })
	redisbroker.Pause(bs[0].(*redisbroker.Broker), false)
	wait.For(t, 10*time.Second, "the rejoin", func() bool { m := members(); return len(m) == 1 && m[0] == want })
	if st := hubs[0].Stats(); st.PresenceRefused != 0 {
		t.Errorf("%d joins refused, want none (a rejoin is none)", st.PresenceRefused)
	}
	// The member leaves as usual afterwards.
	c.Close()
	wait.For(t, 10*time.Second, "the leave", func() bool { return len(members()) == 0 })
}
