package brokertest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// RunControl checks hub.ControlBroker: a control message sent on any node
// reaches the OnControl function of every node, the sender's included,
// byte for byte; one larger than hub.MaxControlBytes is refused; a closed
// broker refuses to send. newNodes returns n brokers on one new log, not
// yet started (a broker that is a cluster of one, like the memory broker,
// is run with n = 1).
func RunControl(t *testing.T, n int, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	t.Run("ReachesEveryNode", func(t *testing.T) { testControlReachesEveryNode(t, n, newNodes) })
}

// controlRecorder collects what one node's OnControl function is given.
type controlRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *controlRecorder) on(msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(msg))
	r.mu.Unlock()
}

func (r *controlRecorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func testControlReachesEveryNode(t *testing.T, n int, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	bs := newNodes(t, n, Options{Size: 100})
	recs := make([]*controlRecorder, len(bs))
	cbs := make([]hub.ControlBroker, len(bs))
	for i, b := range bs {
		cb, ok := b.(hub.ControlBroker)
		if !ok {
			t.Fatalf("node %d (%T) is not a hub.ControlBroker", i, b)
		}
		recs[i], cbs[i] = &controlRecorder{}, cb
		cb.OnControl(recs[i].on)
		if err := b.Start(func([]*hub.Message) {}); err != nil {
			t.Fatalf("failed to start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = b.Close() })
	}
	ctx := ctxT(t)
	var want []string
	for i, cb := range cbs {
		// Bytes JSON would escape, and a size near the bound.
		msg := fmt.Sprintf(`{"op":"disconnect","user":"u<&>\u00e9 %d","pad":"%s"}`, i, string(slices.Repeat([]byte("x"), 1000*i)))
		if err := cb.PublishControl(ctx, []byte(msg)); err != nil {
			t.Fatalf("node %d: failed to publish a control message: %v", i, err)
		}
		want = append(want, msg)
	}
	big := slices.Repeat([]byte("y"), hub.MaxControlBytes+1)
	if err := cbs[0].PublishControl(ctx, big); err == nil {
		t.Errorf("a control message of %d bytes was sent, want it refused", len(big))
	}
	w := slices.Clone(want)
	slices.Sort(w)
	for i, r := range recs {
		wait.For(t, 10*time.Second, fmt.Sprintf("node %d to receive every control message", i), func() bool { return len(r.got()) >= len(want) })
		// Each node's messages arrive in the order it sent them; the
		// nodes' may interleave.
		got := r.got()
		slices.Sort(got)
		if !slices.Equal(got, w) {
			t.Errorf("node %d received %d control messages, not the %d sent (or not byte for byte)", i, len(got), len(want))
		}
	}
	for i, b := range bs {
		if err := b.Close(); err != nil {
			t.Fatalf("failed to close node %d: %v", i, err)
		}
		before := len(recs[i].got())
		if err := cbs[i].PublishControl(ctx, []byte(`{}`)); err == nil {
			t.Errorf("node %d: a closed broker sent a control message", i)
		} else if !errors.Is(err, hub.ErrClosed) {
			t.Errorf("node %d: sending on a closed broker: %v, want hub.ErrClosed", i, err)
		}
		if after := len(recs[i].got()); after != before {
			t.Errorf("node %d: OnControl was called after Close", i)
		}
	}
}
