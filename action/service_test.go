package action_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

var idPattern = regexp.MustCompile(`^act_[a-z2-7]{20}$`)

func TestEchoSucceeds(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true})
	sub := subscribe(t, h)

	before := time.Now()
	a := submit(t, s, action.Request{Type: "echo", Topic: "t.echo", Payload: json.RawMessage(` { "b" : [1, 2.50] , "a":"x" } `)})
	if !idPattern.MatchString(a.ID) {
		t.Errorf("id %q is not act_ + 20 lowercase base32 characters", a.ID)
	}
	if a.Status != action.Pending || a.Type != "echo" || a.Topic != "t.echo" || a.FinishedAt != nil {
		t.Errorf("Submit returned %+v, want a pending echo on t.echo", a)
	}
	if a.CreatedAt.Before(before.Add(-time.Second)) || a.CreatedAt.After(time.Now()) {
		t.Errorf("created_at %v is not the submission time", a.CreatedAt)
	}

	o := sub.await(t, a.ID)
	if o.EventType != action.TypeSucceeded || o.Topic != "t.echo" {
		t.Errorf("event %s on %s, want %s on t.echo", o.EventType, o.Topic, action.TypeSucceeded)
	}
	if o.Status != action.Succeeded || o.Type != "echo" || string(o.Result) != `{"b":[1,2.50],"a":"x"}` {
		t.Errorf("event data %+v result %s", o, o.Result)
	}
	if _, ok := o.keys["error"]; ok || len(o.keys) != 4 {
		t.Errorf("succeeded event has keys %v, want action_id, type, status, result", o.keys)
	}

	g := mustGet(t, s, a.ID)
	if g.Status != action.Succeeded || string(g.Result) != `{"b":[1,2.50],"a":"x"}` || g.Error != nil || g.Attempts != 1 {
		t.Errorf("Get = %+v", g)
	}
	if g.FinishedAt == nil || g.FinishedAt.Before(g.CreatedAt) {
		t.Errorf("finished_at %v, created_at %v", g.FinishedAt, g.CreatedAt)
	}
	if !g.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("created_at changed from %v to %v", a.CreatedAt, g.CreatedAt)
	}
	if st := s.Stats(); st.Accepted != 1 || st.Succeeded != 1 || st.Failed != 0 || st.Queued != 0 || st.Running != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestEchoMissingPayloadIsNull(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true})
	sub := subscribe(t, h)

	a := submit(t, s, action.Request{Type: "echo", Topic: "t.x"})
	o := sub.await(t, a.ID)
	if string(o.Result) != "null" {
		t.Errorf("result %s, want null", o.Result)
	}
	if _, ok := o.keys["result"]; !ok {
		t.Error("a null result must still be in the event data")
	}
}

func TestEchoOffIsUnknown(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{})
	_, _, err := s.Submit(context.Background(), action.Request{Type: "echo", Topic: "t.x"})
	if !errors.Is(err, action.ErrUnknownAction) {
		t.Fatalf("Submit echo without Options.Echo: %v, want ErrUnknownAction", err)
	}
}

func TestHandlerOutcomes(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Workers: 2})
	sub := subscribe(t, h)

	var calls sync.Map // action ID -> *action.Call
	s.Handle("ok", action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		calls.Store(c.ID, c)
		return json.RawMessage(`{ "n" : 1 }`), nil
	}))
	s.Handle("plain", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		return nil, errors.New("card declined")
	}))
	s.Handle("coded", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		return nil, fmt.Errorf("failed to charge: %w", &action.Failure{Code: "insufficient_funds", Message: "balance too low"})
	}))
	s.Handle("panics", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		panic("boom")
	}))
	s.Handle("garbage", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		return json.RawMessage(`{not json`), nil
	}))

	ok := submit(t, s, action.Request{Type: "ok", Topic: "t.a", Payload: json.RawMessage(`[1]`), Caller: "alice"})
	o := sub.await(t, ok.ID)
	if o.EventType != action.TypeSucceeded || string(o.Result) != `{"n":1}` {
		t.Errorf("ok: %+v %s", o, o.Result)
	}
	v, _ := calls.Load(ok.ID)
	c := v.(*action.Call)
	if c.Type != "ok" || c.Topic != "t.a" || string(c.Payload) != "[1]" || c.Caller != "alice" || c.Attempt != 1 {
		t.Errorf("handler got %+v", c)
	}
	if c.IdempotencyKey != ok.ID {
		t.Errorf("IdempotencyKey without a caller key = %q, want the action ID %q", c.IdempotencyKey, ok.ID)
	}

	for _, tc := range []struct {
		typ, code, msg string
	}{
		{"plain", action.CodeHandlerError, "card declined"},
		{"coded", "insufficient_funds", "balance too low"},
		{"panics", action.CodeHandlerPanic, ""},
		{"garbage", action.CodeHandlerBadResult, ""},
	} {
		a := submit(t, s, action.Request{Type: tc.typ, Topic: "t.b"})
		o := sub.await(t, a.ID)
		if o.EventType != action.TypeFailed || o.Status != action.Failed || o.Error == nil || o.Error.Code != tc.code {
			t.Errorf("%s: event %s %+v error %+v, want failed with %s", tc.typ, o.EventType, o, o.Error, tc.code)
			continue
		}
		if tc.msg != "" && o.Error.Message != tc.msg {
			t.Errorf("%s: message %q, want %q", tc.typ, o.Error.Message, tc.msg)
		}
		if _, has := o.keys["result"]; has {
			t.Errorf("%s: failed event carries a result: %v", tc.typ, o.keys)
		}
		g := mustGet(t, s, a.ID)
		if g.Status != action.Failed || g.Error == nil || g.Error.Code != tc.code || g.Result != nil || g.Attempts != 1 {
			t.Errorf("%s: Get = %+v", tc.typ, g)
		}
	}
	if st := s.Stats(); st.Succeeded != 1 || st.Failed != 4 || st.Retried != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// A Go handler's error is final unless it is marked Retryable.
func TestHandlerRetryable(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{MaxAttempts: 4, BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond})
	sub := subscribe(t, h)

	var attempts []int
	var mu sync.Mutex
	s.Handle("flaky", action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		mu.Lock()
		attempts = append(attempts, c.Attempt)
		mu.Unlock()
		if c.Attempt < 3 {
			return nil, action.Retryable(errors.New("try later"))
		}
		return json.RawMessage(`"third time"`), nil
	}))
	s.Handle("down", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		return nil, action.Retryable(&action.Failure{Code: "ledger_down", Message: "ledger unreachable"})
	}))

	a := submit(t, s, action.Request{Type: "flaky", Topic: "t.r"})
	if o := sub.await(t, a.ID); o.EventType != action.TypeSucceeded || string(o.Result) != `"third time"` {
		t.Errorf("flaky: %+v %s", o, o.Result)
	}
	mu.Lock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Errorf("attempts %v, want [1 2 3]", attempts)
	}
	mu.Unlock()
	if g := mustGet(t, s, a.ID); g.Attempts != 3 {
		t.Errorf("Attempts = %d, want 3", g.Attempts)
	}

	b := submit(t, s, action.Request{Type: "down", Topic: "t.r"})
	o := sub.await(t, b.ID)
	if o.Error == nil || o.Error.Code != "ledger_down" || o.Error.Message != "ledger unreachable" {
		t.Errorf("down: %+v", o.Error)
	}
	if g := mustGet(t, s, b.ID); g.Attempts != 4 {
		t.Errorf("Attempts = %d, want MaxAttempts 4", g.Attempts)
	}
	if st := s.Stats(); st.Retried != 2+3 {
		t.Errorf("Retried = %d, want 5", st.Retried)
	}
	if !action.IsRetryable(fmt.Errorf("wrapped: %w", action.Retryable(errors.New("x")))) || action.IsRetryable(errors.New("x")) || action.Retryable(nil) != nil {
		t.Error("Retryable/IsRetryable disagree")
	}
}

// holdingBroker is the hub's memory broker, except that Publish, once the
// events are in the log and on their way to subscribers, does not return
// until the test lets it: whatever the publisher does after publishing
// cannot have happened while the test looks.
type holdingBroker struct {
	hub.Broker
	proceed chan struct{}
}

func (b *holdingBroker) Publish(ctx context.Context, drafts []hub.Draft) ([]*hub.Message, error) {
	msgs, err := b.Broker.Publish(ctx, drafts)
	select {
	case <-b.proceed:
	case <-ctx.Done():
	}
	return msgs, err
}

// When a subscriber sees an action's result event, Get already shows the
// final status: the record is final before the event is published.
func TestStatusFinalBeforeEvent(t *testing.T) {
	b := &holdingBroker{Broker: hub.NewMemoryBroker(hub.MemoryOptions{}), proceed: make(chan struct{})}
	h, err := hub.New(hub.Options{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	s := newService(t, h, action.Options{Echo: true})
	sub := subscribe(t, h)
	s.Handle("fail", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		return nil, errors.New("no")
	}))

	for i := range 10 {
		typ := "echo"
		if i%2 == 1 {
			typ = "fail"
		}
		a := submit(t, s, action.Request{Type: typ, Topic: "t.order", Payload: json.RawMessage(fmt.Sprint(i))})
		o := sub.await(t, a.ID) // the publisher is still inside Publish
		g := mustGet(t, s, a.ID)
		if g.Status != o.Status || g.FinishedAt == nil {
			t.Errorf("%s: the event says %s but Get says %s (finished_at %v)", typ, o.Status, g.Status, g.FinishedAt)
		}
		select {
		case b.proceed <- struct{}{}:
		case <-time.After(waitLong):
			t.Fatal("the publisher is not waiting in Publish")
		}
	}
}

func TestRouting(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{})
	sub := subscribe(t, h)

	named := func(name string) action.Handler {
		return action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
			return json.Marshal(name)
		})
	}
	s.Handle("billing.", named("billing."))
	s.Handle("billing.invoice.*", named("billing.invoice.*"))
	s.Handle("billing.invoice.pay", named("exact"))
	s.Handle("bill*", named("bill*"))

	route := func(typ string) (string, error) {
		a, _, err := s.Submit(context.Background(), action.Request{Type: typ, Topic: "t.route"})
		if err != nil {
			return "", err
		}
		var got string
		if err := json.Unmarshal(sub.await(t, a.ID).Result, &got); err != nil {
			t.Fatal(err)
		}
		return got, nil
	}
	for typ, want := range map[string]string{
		"billing.invoice.pay":    "exact",
		"billing.invoice.refund": "billing.invoice.*",
		"billing.invoice.":       "billing.invoice.*",
		"billing.payout":         "billing.",
		"billing":                "bill*",
		"billboard":              "bill*",
	} {
		if got, err := route(typ); err != nil || got != want {
			t.Errorf("type %s ran on %q (%v), want %q", typ, got, err, want)
		}
	}
	if _, err := route("other"); !errors.Is(err, action.ErrUnknownAction) {
		t.Errorf("no fallback: %v, want ErrUnknownAction", err)
	}
	if st := s.Stats(); st.Accepted != 6 {
		t.Errorf("Accepted = %d: an unknown type must not be accepted", st.Accepted)
	}

	s.Handle("", named("fallback"))
	if got, err := route("other"); err != nil || got != "fallback" {
		t.Errorf("fallback: %q %v", got, err)
	}
	if got, err := route("billing.invoice.pay"); err != nil || got != "exact" {
		t.Errorf("fallback must not shadow exact types: %q %v", got, err)
	}
	// Registering again replaces.
	s.Handle("billing.invoice.pay", named("exact2"))
	if got, err := route("billing.invoice.pay"); err != nil || got != "exact2" {
		t.Errorf("re-registered: %q %v", got, err)
	}
}

func TestSubmitValidation(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true})
	s.Handle("", action.HandlerFunc(echoHandler))
	for _, tc := range []struct {
		name string
		req  action.Request
		want error
	}{
		{"empty type", action.Request{Topic: "t.x"}, hub.ErrInvalidType},
		{"reserved type", action.Request{Type: "herald.reset", Topic: "t.x"}, hub.ErrInvalidType},
		{"reserved type in capitals", action.Request{Type: "HERALD.reset", Topic: "t.x"}, hub.ErrInvalidType},
		{"space in type", action.Request{Type: "bad type", Topic: "t.x"}, hub.ErrInvalidType},
		{"long type", action.Request{Type: strings.Repeat("a", 65), Topic: "t.x"}, hub.ErrInvalidType},
		{"empty topic", action.Request{Type: "echo"}, hub.ErrInvalidTopic},
		{"wildcard topic", action.Request{Type: "echo", Topic: "t.*"}, hub.ErrInvalidTopic},
		{"empty segment", action.Request{Type: "echo", Topic: "t..x"}, hub.ErrInvalidTopic},
		{"truncated payload", action.Request{Type: "echo", Topic: "t.x", Payload: json.RawMessage(`{"a":`)}, hub.ErrInvalidData},
		{"two values", action.Request{Type: "echo", Topic: "t.x", Payload: json.RawMessage(`1 2`)}, hub.ErrInvalidData},
		{"invalid UTF-8", action.Request{Type: "echo", Topic: "t.x", Payload: json.RawMessage("\"\xff\"")}, hub.ErrInvalidData},
		{"invalid UTF-8 with key", action.Request{Type: "echo", Topic: "t.x", Payload: json.RawMessage("\"\xff\""), IdempotencyKey: "k"}, hub.ErrInvalidData},
	} {
		_, _, err := s.Submit(context.Background(), tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if st := s.Stats(); st.Accepted != 0 {
		t.Errorf("Accepted = %d after only invalid requests", st.Accepted)
	}
}

// TestRequestValidate pins what a client reads, over HTTP and WebSocket
// alike, when its request lacks a type or a topic.
func TestRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		req  action.Request
		want error
		msg  string
	}{
		{action.Request{}, hub.ErrInvalidType, `"type" is required`},
		{action.Request{Topic: "t.x"}, hub.ErrInvalidType, `"type" is required`},
		{action.Request{Type: "echo"}, hub.ErrInvalidTopic, `"topic" is required: the action's result is published there`},
	} {
		err := tc.req.Validate()
		if !errors.Is(err, tc.want) || err.Error() != tc.msg {
			t.Errorf("%+v: %v, want %q matching %v", tc.req, err, tc.msg, tc.want)
		}
	}
	// The values themselves are Submit's to check.
	if err := (action.Request{Type: "bad type", Topic: "t.*"}).Validate(); err != nil {
		t.Errorf("a request with a type and a topic: %v", err)
	}
}

func echoHandler(_ context.Context, c *action.Call) (json.RawMessage, error) { return c.Payload, nil }

// TestQueueFull: QueueSize bounds the actions accepted and not yet done,
// the running one included.
func TestQueueFull(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Workers: 1, QueueSize: 2})
	sub := subscribe(t, h)
	g := newGate()
	s.Handle("slow", g)

	first := submit(t, s, action.Request{Type: "slow", Topic: "t.q"})
	g.awaitStart(t)
	if a := mustGet(t, s, first.ID); a.Status != action.Running {
		t.Errorf("status of the started action: %s, want running", a.Status)
	}
	queued := submit(t, s, action.Request{Type: "slow", Topic: "t.q"})
	if st := s.Stats(); st.Running != 1 || st.Queued != 1 {
		t.Errorf("Stats = %+v, want 1 running and 1 queued", st)
	}
	_, _, err := s.Submit(context.Background(), action.Request{Type: "slow", Topic: "t.q"})
	if !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("Submit with one action running and one queued: %v, want ErrQueueFull", err)
	}
	if st := s.Stats(); st.RejectedFull != 1 || st.Accepted != 2 {
		t.Errorf("Stats = %+v, want 1 rejected and 2 accepted", st)
	}
	close(g.release)
	for _, a := range []action.Action{first, queued} {
		if o := sub.await(t, a.ID); o.Status != action.Succeeded {
			t.Errorf("%s: %+v", a.ID, o)
		}
	}
	// Room again once they are done.
	wait.For(t, waitLong, "room in the queue", func() bool {
		_, _, err := s.Submit(context.Background(), action.Request{Type: "slow", Topic: "t.q"})
		return err == nil
	})
}

// Every accepted action reaches a final status and is published exactly
// once, however hard the queue is pushed; the ones not accepted were told so.
func TestNoLostActions(t *testing.T) {
	const (
		total      = 10000
		submitters = 8
	)
	h := newHub(t, 64<<20)
	s := newService(t, h, action.Options{Echo: true, Workers: 3, QueueSize: 32})
	sub := subscribe(t, h)
	var fails atomic.Int64
	s.Handle("sometimes", action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		if fails.Add(1)%5 == 0 {
			return nil, errors.New("no")
		}
		return c.Payload, nil
	}))

	// Half the submitters give up on ErrQueueFull; the other half retry at
	// once, like clients honouring Retry-After with no delay, so that the
	// queue stays full while thousands of actions get through.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []string
		gaveUp   atomic.Int64
		rejected atomic.Int64
		other    atomic.Int64
	)
	for w := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string
			for i := range total / submitters {
				typ := "echo"
				if i%2 == 1 {
					typ = "sometimes"
				}
				req := action.Request{Type: typ, Topic: fmt.Sprintf("t.load.%d", w), Payload: json.RawMessage(fmt.Sprint(i))}
				for {
					a, _, err := s.Submit(context.Background(), req)
					if err == nil {
						mine = append(mine, a.ID)
						break
					}
					if !errors.Is(err, action.ErrQueueFull) {
						other.Add(1)
						break
					}
					rejected.Add(1)
					if w%2 == 0 {
						gaveUp.Add(1)
						break
					}
					runtime.Gosched()
				}
			}
			mu.Lock()
			accepted = append(accepted, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if other.Load() != 0 {
		t.Fatalf("%d submissions failed with an error other than ErrQueueFull", other.Load())
	}
	if n := int64(len(accepted)) + gaveUp.Load(); n != total {
		t.Fatalf("%d accepted + %d given up != %d", len(accepted), gaveUp.Load(), total)
	}
	st := s.Stats()
	if st.Accepted != int64(len(accepted)) || st.RejectedFull != rejected.Load() {
		t.Fatalf("Stats = %+v, but %d accepted and %d rejected", st, len(accepted), rejected.Load())
	}
	t.Logf("%d accepted, %d rejected as full, %d given up", len(accepted), rejected.Load(), gaveUp.Load())

	wait.For(t, waitLong, "every accepted action's event", func() bool {
		for sub.total < len(accepted) && sub.pump(t, time.Millisecond) != nil {
		}
		return sub.total >= len(accepted)
	})
	sub.quiet(t, 20*time.Millisecond) // a duplicate would arrive by now
	if sub.total != len(accepted) {
		t.Errorf("%d result events for %d accepted actions", sub.total, len(accepted))
	}
	var succeeded, failed int64
	for _, id := range accepted {
		os := sub.seen[id]
		if len(os) != 1 {
			t.Fatalf("action %s published %d times", id, len(os))
		}
		a := mustGet(t, s, id)
		if a.Status != os[0].Status || !(a.Status == action.Succeeded || a.Status == action.Failed) {
			t.Fatalf("action %s: Get says %s, event says %s", id, a.Status, os[0].Status)
		}
		if a.Status == action.Succeeded {
			succeeded++
		} else {
			failed++
		}
	}
	st = s.Stats()
	if st.Succeeded != succeeded || st.Failed != failed || st.Queued != 0 || st.Running != 0 {
		t.Errorf("Stats = %+v, counted %d succeeded, %d failed", st, succeeded, failed)
	}
}

// TestMaxFinishedBoundsRecords: however long the TTL, no more than the
// memory store's MaxFinished finished actions are kept; the oldest go
// first, and their idempotency keys with them.
func TestMaxFinishedBoundsRecords(t *testing.T) {
	h := newHub(t, 0)
	st := newStore(t, memstore.Options{TTL: time.Hour, MaxFinished: 3})
	s := newService(t, h, action.Options{Store: st, Echo: true, TTL: time.Hour, Workers: 1})
	sub := subscribe(t, h)
	var ids []string
	for i := range 5 {
		a := submit(t, s, action.Request{Type: "echo", Topic: "t.bound", IdempotencyKey: fmt.Sprintf("k%d", i)})
		sub.await(t, a.ID) // finished, in order
		ids = append(ids, a.ID)
	}
	for i, id := range ids {
		_, ok, _ := s.Get(context.Background(), id)
		if want := i >= 2; ok != want {
			t.Errorf("action %d kept = %v, want %v", i, ok, want)
		}
	}
	// The forgotten action's key is free again: the same key runs anew.
	a, created, err := s.Submit(context.Background(), action.Request{Type: "echo", Topic: "t.bound", IdempotencyKey: "k0"})
	if err != nil || !created || a.ID == ids[0] {
		t.Fatalf("reusing an evicted key: %v created=%v id=%s", err, created, a.ID)
	}
	if _, _, err := s.Submit(context.Background(), action.Request{Type: "echo", Topic: "t.bound", IdempotencyKey: "bad\x01key"}); !errors.Is(err, action.ErrInvalidKey) {
		t.Fatalf("a control byte in the key: %v, want ErrInvalidKey", err)
	}
}

// TestMaxFinishedBytesBoundsRecords: however long the TTL and however few
// the records, the finished actions kept hold no more than MaxFinishedBytes
// of results; the oldest go first.
func TestMaxFinishedBytesBoundsRecords(t *testing.T) {
	const (
		maxBytes   = 256 << 10
		resultSize = 64 << 10
		actions    = 12
	)
	h := newHub(t, 0)
	st := newStore(t, memstore.Options{TTL: time.Hour, MaxFinished: 1000, MaxFinishedBytes: maxBytes})
	s := newService(t, h, action.Options{Store: st, Echo: true, TTL: time.Hour, Workers: 1})
	sub := subscribe(t, h)
	payload := json.RawMessage(`"` + strings.Repeat("x", resultSize-2) + `"`)
	var ids []string
	for range actions {
		a := submit(t, s, action.Request{Type: "echo", Topic: "t.bytes", Payload: payload})
		sub.await(t, a.ID) // finished, in order
		ids = append(ids, a.ID)
	}
	kept := 0
	for i, id := range ids {
		a, ok, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if kept > 0 {
				t.Errorf("action %d forgotten after a newer one was kept", i)
			}
			continue
		}
		kept++
		if len(a.Result) != resultSize {
			t.Errorf("action %d kept with a result of %d bytes, want %d", i, len(a.Result), resultSize)
		}
	}
	if kept*resultSize > maxBytes || kept < maxBytes/resultSize-1 {
		t.Fatalf("kept %d finished actions of %d bytes with MaxFinishedBytes %d", kept, resultSize, maxBytes)
	}
}
