package hub_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// recorder is a BatchWriter that keeps what it is given. fail, when set,
// is returned by the next WriteBatch.
type recorder struct {
	c        *hub.Client
	mu       sync.Mutex
	items    []hub.Item
	batches  int
	fail     error
	beats    atomic.Int32
	ended    chan hub.End // receives Finish's End, once
	inFlight atomic.Int32 // methods running now: the contract says at most one
}

func newRecorder(c *hub.Client) *recorder {
	return &recorder{c: c, ended: make(chan hub.End, 1)}
}

func (r *recorder) enter() func() {
	if r.inFlight.Add(1) != 1 {
		panic("two BatchWriter calls at once")
	}
	return func() { r.inFlight.Add(-1) }
}

func (r *recorder) WriteBatch(items []hub.Item) error {
	defer r.enter()()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.items = append(r.items, items...)
	r.batches++
	return nil
}

func (r *recorder) KeepAlive() error {
	defer r.enter()()
	r.beats.Add(1)
	return nil
}

func (r *recorder) Finish(end hub.End) {
	defer r.enter()()
	r.ended <- end
	r.c.Close()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.items)
}

func (r *recorder) end(t *testing.T) hub.End {
	t.Helper()
	select {
	case e := <-r.ended:
		return e
	case <-time.After(waitTimeout):
		t.Fatalf("the writer did not finish")
		return hub.End{}
	}
}

// TestWriterParks checks the writer's lifecycle: it parks when idle (no
// goroutine), and the next event, a reply or a due keep-alive restarts it
// without losing a wake; a keep-alive's writer parks again at once.
func TestWriterParks(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("park.>")})
	r := newRecorder(c)
	done := make(chan struct{})
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Millisecond, KeepAlive: 20 * time.Millisecond, WritesKeepAlive: true}, done)

	for i, topic := range []string{"park.a", "park.b", "park.c"} {
		wait.For(t, waitTimeout, "the writer to park", func() bool { return hub.Parked(c) })
		pub(t, h, topic, `1`)
		wait.For(t, waitTimeout, "the event to be written", func() bool { return r.count() == 2*i+1 })
		wait.For(t, waitTimeout, "the writer to park", func() bool { return hub.Parked(c) })
		c.Queue([]byte("reply"))
		wait.For(t, waitTimeout, "the reply to be written", func() bool { return r.count() == 2*i+2 })
	}
	// Keep-alives go on while parked, and the writer parks again after each.
	wait.For(t, waitTimeout, "three keep-alives", func() bool { return r.beats.Load() >= 3 })
	wait.For(t, waitTimeout, "the writer to park", func() bool { return hub.Parked(c) })

	close(done)
	c.Interrupt()
	if e := r.end(t); e != (hub.End{}) {
		t.Fatalf("after done: End %+v, want none", e)
	}
}

// TestWriterEnds checks that a failure, a failed write and a closed done
// each finish the connection exactly once, from a parked writer too.
func TestWriterEnds(t *testing.T) {
	h := newHub(t, hub.Options{})
	opts := &hub.WriterOptions{ParkAfter: time.Millisecond}

	c := newClient(t, h, "test")
	r := newRecorder(c)
	c.Serve(r, opts, nil)
	wait.For(t, waitTimeout, "the writer to park", func() bool { return hub.Parked(c) })
	c.Fail(hub.ErrSlowConsumer)
	if e := r.end(t); !errors.Is(e.Closed, hub.ErrSlowConsumer) {
		t.Fatalf("after Fail: End %+v, want Closed: slow consumer", e)
	}

	c = newClient(t, h, "test")
	r = newRecorder(c)
	r.fail = errors.New("broken pipe")
	c.Serve(r, opts, nil)
	c.Queue([]byte("reply"))
	if e := r.end(t); e.Failed != r.fail {
		t.Fatalf("after a failed write: End %+v, want Failed: %v", e, r.fail)
	}

	c = newClient(t, h, "test")
	r = newRecorder(c)
	done := make(chan struct{})
	close(done)
	c.Serve(r, &hub.WriterOptions{}, done) // never parks: returns once finished
	select {
	case e := <-r.ended:
		if e != (hub.End{}) {
			t.Fatalf("after done: End %+v, want none", e)
		}
	default:
		t.Fatalf("Serve without ParkAfter returned before Finish")
	}
}

// TestWriterLinger: with WriterOptions.Linger, an item that comes long
// after the last write goes out at once; one that comes sooner waits the
// linger, and what is queued meanwhile goes out in the same batch.
func TestWriterLinger(t *testing.T) {
	const linger = time.Second
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	r := newRecorder(c)
	done := make(chan struct{})
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Minute, Linger: linger}, done)

	c.Queue([]byte("a"))
	wait.For(t, waitTimeout, "the first item to be written", func() bool { return r.count() == 1 })
	start := time.Now()
	c.Queue([]byte("b"))
	c.Queue([]byte("c"))
	wait.For(t, waitTimeout, "the next items to be written", func() bool { return r.count() == 3 })
	if d := time.Since(start); d < linger {
		t.Fatalf("items queued right after a write were written after %v, want no sooner than the linger, %v", d, linger)
	}
	r.mu.Lock()
	batches := r.batches
	r.mu.Unlock()
	if batches != 2 {
		t.Fatalf("3 items in %d batches, want 2: the items queued together should share the lingering write", batches)
	}
	close(done)
	c.Interrupt()
	if e := r.end(t); e != (hub.End{}) {
		t.Fatalf("after done: End %+v, want none", e)
	}
}

// TestWriterLingerEndsWithTransport: a first item goes out at once even
// with an hour's linger (no write came before it), and a writer lingering
// for an hour over the next still finishes the connection as soon as the
// transport is done.
func TestWriterLingerEndsWithTransport(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	r := newRecorder(c)
	done := make(chan struct{})
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Minute, Linger: time.Hour}, done)
	c.Queue([]byte("a"))
	wait.For(t, waitTimeout, "the first item to be written", func() bool { return r.count() == 1 })
	c.Queue([]byte("b"))
	close(done)
	if e := r.end(t); e != (hub.End{}) {
		t.Fatalf("after done: End %+v, want none", e)
	}
}
