package action_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestIdempotentReplay(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{})
	sub := subscribe(t, h)
	g := newGate()
	var calls atomic.Int64
	s.Handle("pay", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		calls.Add(1)
		return g.Handle(ctx, c)
	}))

	req := action.Request{Type: "pay", Topic: "t.pay", Payload: json.RawMessage(`{"amount":10,"to":"bob"}`), IdempotencyKey: "k1"}
	first := submit(t, s, req)
	call := g.awaitStart(t)
	if call.IdempotencyKey != "k1" {
		t.Errorf("handler got IdempotencyKey %q, want the caller's k1", call.IdempotencyKey)
	}

	// The same body written differently, while the first still runs.
	again := req
	again.Payload = json.RawMessage("{ \"to\" : \"bob\",\n \"amount\": 10 }")
	a, created, err := s.Submit(context.Background(), again)
	if err != nil || created || a.ID != first.ID {
		t.Fatalf("replay while running: %+v created=%v err=%v, want %s and created=false", a, created, err, first.ID)
	}
	if a.Status != action.Running {
		t.Errorf("replay while running shows %s, want running", a.Status)
	}

	close(g.release)
	o := sub.await(t, first.ID)
	if o.Status != action.Succeeded {
		t.Fatalf("event %+v", o)
	}
	a, created, err = s.Submit(context.Background(), req)
	if err != nil || created || a.ID != first.ID || a.Status != action.Succeeded || string(a.Result) != `"released"` {
		t.Fatalf("replay after finish: %+v created=%v err=%v", a, created, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want once", n)
	}
	if st := s.Stats(); st.Accepted != 1 {
		t.Errorf("Accepted = %d, want 1", st.Accepted)
	}
	sub.quiet(t, 20*time.Millisecond)
	if n := len(sub.seen[first.ID]); n != 1 {
		t.Errorf("%d result events, want 1", n)
	}
}

func TestIdempotencyMismatch(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true})
	s.Handle("echo2", action.HandlerFunc(echoHandler))
	req := action.Request{Type: "echo", Topic: "t.m", Payload: json.RawMessage(`{"n":1}`), IdempotencyKey: "k"}
	first := submit(t, s, req)

	for name, mut := range map[string]func(*action.Request){
		"payload":     func(r *action.Request) { r.Payload = json.RawMessage(`{"n":2}`) },
		"number text": func(r *action.Request) { r.Payload = json.RawMessage(`{"n":1.0}`) },
		"topic":       func(r *action.Request) { r.Topic = "t.other" },
		"type":        func(r *action.Request) { r.Type = "echo2" },
	} {
		r := req
		mut(&r)
		_, _, err := s.Submit(context.Background(), r)
		if !errors.Is(err, action.ErrIdempotencyMismatch) {
			t.Errorf("%s changed: %v, want ErrIdempotencyMismatch", name, err)
		}
	}
	a, created, err := s.Submit(context.Background(), req)
	if err != nil || created || a.ID != first.ID {
		t.Errorf("the original body still matches: %+v %v %v", a, created, err)
	}
}

func TestIdempotencyScopedToCaller(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{})
	sub := subscribe(t, h)
	var calls atomic.Int64
	s.Handle("do", action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		calls.Add(1)
		return json.Marshal(c.Caller)
	}))

	alice := submit(t, s, action.Request{Type: "do", Topic: "t.c", IdempotencyKey: "same", Caller: "alice"})
	bob := submit(t, s, action.Request{Type: "do", Topic: "t.c", IdempotencyKey: "same", Caller: "bob"})
	// Another body under the same key is fine for another caller.
	anon := submit(t, s, action.Request{Type: "do", Topic: "t.c", Payload: json.RawMessage(`1`), IdempotencyKey: "same"})
	if alice.ID == bob.ID || bob.ID == anon.ID {
		t.Fatal("callers share an idempotency key")
	}
	for id, want := range map[string]string{alice.ID: `"alice"`, bob.ID: `"bob"`, anon.ID: `""`} {
		if o := sub.await(t, id); string(o.Result) != want {
			t.Errorf("%s: result %s, want %s", id, o.Result, want)
		}
	}
	if calls.Load() != 3 {
		t.Errorf("handler called %d times, want 3", calls.Load())
	}
}

// A key lives as long as its action's record; then it is free again.
func TestIdempotencyKeyExpires(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true, TTL: 30 * time.Millisecond})
	sub := subscribe(t, h)

	req := action.Request{Type: "echo", Topic: "t.ttl", IdempotencyKey: "once"}
	first := submit(t, s, req)
	sub.await(t, first.ID)
	wait.For(t, waitLong, "the action to be forgotten", func() bool {
		_, ok, _ := s.Get(context.Background(), first.ID)
		return !ok
	})
	second := submit(t, s, req)
	if second.ID == first.ID {
		t.Fatal("an expired key returned the forgotten action")
	}
	sub.await(t, second.ID)
	// A different body is no mismatch either once the key is free.
	wait.For(t, waitLong, "the second action to be forgotten", func() bool {
		_, ok, _ := s.Get(context.Background(), second.ID)
		return !ok
	})
	req.Payload = json.RawMessage(`"other"`)
	submit(t, s, req)
}

// Finished records are forgotten after the TTL; pending and running ones
// are kept however long they take. (That the memory store also frees them
// is memstore's TestTTL and TestUnfinishedKept.)
func TestTTLForgetsFinished(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true, TTL: 20 * time.Millisecond})
	sub := subscribe(t, h)
	g := newGate()
	s.Handle("slow", g)

	slow := submit(t, s, action.Request{Type: "slow", Topic: "t.j"})
	g.awaitStart(t)
	var ids []string
	for i := range 50 {
		req := action.Request{Type: "echo", Topic: "t.j"}
		if i%2 == 0 {
			req.IdempotencyKey = fmt.Sprint("k", i)
		}
		ids = append(ids, submit(t, s, req).ID)
	}
	for _, id := range ids {
		sub.await(t, id)
	}
	wait.For(t, waitLong, "finished actions to be forgotten", func() bool {
		for _, id := range ids {
			if _, ok, _ := s.Get(context.Background(), id); ok {
				return false
			}
		}
		return true
	})
	if a, ok, _ := s.Get(context.Background(), slow.ID); !ok || a.Status != action.Running {
		t.Fatalf("the running action was forgotten or changed: %+v %v", a, ok)
	}
	close(g.release)
	if o := sub.await(t, slow.ID); o.Status != action.Succeeded {
		t.Fatalf("%+v", o)
	}
	wait.For(t, waitLong, "the slow action to be forgotten", func() bool {
		_, ok, _ := s.Get(context.Background(), slow.ID)
		return !ok
	})
}
