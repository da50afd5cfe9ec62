package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// A cursor of another epoch of the log (a restarted server's, say) is
// answered with a reset, delivered as a value with the head cursor; the
// events published after it follow.
func TestResetIsAValue(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			first, err := c.Publish(ctx, "r.a", "", 1)
			if err != nil {
				t.Fatal(err)
			}
			s, err := c.Subscribe(ctx, []string{"r.*"}, &SubscribeOptions{Since: "otherepoch-5"})
			if err != nil {
				t.Fatal(err)
			}
			m := next(t, s)
			if m.Kind != KindReset || m.Reason != "epoch_changed" || m.Cursor != first {
				t.Fatalf("got %+v, want a reset epoch_changed at %s", m, first)
			}
			id, err := c.Publish(ctx, "r.b", "greeting", map[string]string{"hi": "there"})
			if err != nil {
				t.Fatal(err)
			}
			e := nextEvent(t, s)
			if e.ID != id || e.Topic != "r.b" || e.Type != "greeting" || string(e.Data) != `{"hi":"there"}` || e.Time.IsZero() {
				t.Fatalf("got %+v, want the event %s", e, id)
			}
			if got := string(e.AppendJSON(nil)); !strings.HasPrefix(got, `{"id":"`+id+`","topic":"r.b","type":"greeting","data":{"hi":"there"},"time":"`) {
				t.Fatalf("AppendJSON = %s", got)
			}
		})
	}
}

// A state subscription gets each key's latest event, a synced marker at
// the snapshot's position, then live events.
func TestStateThenSynced(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"a", "3"}} {
				if _, err := c.Publish(ctx, "st", "", json.RawMessage(kv[1]), WithKey(kv[0])); err != nil {
					t.Fatal(err)
				}
			}
			s, err := c.Subscribe(ctx, []string{"st"}, &SubscribeOptions{State: true})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for range 2 {
				e := nextEvent(t, s)
				got = append(got, e.Key+"="+string(e.Data))
			}
			if strings.Join(got, " ") != "b=2 a=3" {
				t.Fatalf("state %v, want b=2 a=3", got)
			}
			if m := next(t, s); m.Kind != KindSynced || m.Cursor == "" || len(m.Topics) != 1 || m.Topics[0] != "st" {
				t.Fatalf("got %+v, want synced of [st]", m)
			}
			if _, err := c.Publish(ctx, "st", "", 4, WithKey("b")); err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); e.Key != "b" || string(e.Data) != "4" {
				t.Fatalf("live: %+v", e)
			}
		})
	}
}

// Rewind starts with the newest retained events.
func TestRewind(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			for i := range 5 {
				if _, err := c.Publish(ctx, "rw", "", i); err != nil {
					t.Fatal(err)
				}
			}
			s, err := c.Subscribe(ctx, []string{"rw"}, &SubscribeOptions{Rewind: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"3", "4"} {
				if e := nextEvent(t, s); string(e.Data) != want {
					t.Fatalf("got %s, want %s", e.Data, want)
				}
			}
		})
	}
}

// PublishBatch returns the cursors in order, and the events arrive in it.
func TestPublishBatch(t *testing.T) {
	node := start(t, server.Config{})
	c := dial(t, node.URL, Options{})
	ctx := testCtx(t)
	s, err := c.Subscribe(ctx, []string{"batch.>"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := c.PublishBatch(ctx, []Draft{
		{Topic: "batch.a", Data: "one"},
		{Topic: "batch.b.c", Type: "t2", Key: "k", Data: json.RawMessage(`{"n":2}`)},
		{Topic: "batch.a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 {
		t.Fatalf("ids %v", ids)
	}
	want := []string{`batch.a message  "one"`, `batch.b.c t2 k {"n":2}`, `batch.a message  null`}
	for i, w := range want {
		e := nextEvent(t, s)
		if got := fmt.Sprintf("%s %s %s %s", e.Topic, e.Type, e.Key, e.Data); got != w || e.ID != ids[i] {
			t.Fatalf("event %d: %s (%s), want %s (%s)", i, got, e.ID, w, ids[i])
		}
	}
	// All or nothing: an invalid event refuses the batch.
	_, err = c.PublishBatch(ctx, []Draft{{Topic: "batch.ok"}, {Topic: "bad topic"}})
	var herr *Error
	if !errors.As(err, &herr) || herr.Status != 400 || herr.Code != "invalid_topic" {
		t.Fatalf("bad batch: %v", err)
	}
}

// With deltas, keyed events arrive as fossil deltas (checked by
// counting them) and the consumer still sees the full data, byte for
// byte, also across a reconnect.
func TestDeltaApplied(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{})
			c := dial(t, r.URL(), Options{Transport: tr})
			pub := dial(t, node.URL, Options{})
			ctx := testCtx(t)
			s, err := c.Subscribe(ctx, []string{"dl.*"}, &SubscribeOptions{Delta: true})
			if err != nil {
				t.Fatal(err)
			}
			big := strings.Repeat("lorem ipsum dolor sit amet ", 40)
			for i := range 20 {
				data := fmt.Sprintf(`{"n":%d,"text":%q,"k":"%c"}`, i, big, 'a'+rune(i%3))
				key := fmt.Sprintf("k%d", i%3)
				if _, err := pub.Publish(ctx, "dl.x", "", json.RawMessage(data), WithKey(key)); err != nil {
					t.Fatal(err)
				}
				if e := nextEvent(t, s); string(e.Data) != data || e.Key != key {
					t.Fatalf("event %d: %s data %.80s…, want %s %.80s…", i, e.Key, e.Data, key, data)
				}
				if i == 9 {
					r.Cut() // the resumed connection starts whole again
				}
			}
			if n := s.deltas.Load(); n < 10 {
				t.Fatalf("%d events came as deltas, want most of 20", n)
			}
		})
	}
}

// Subscribe reports what the server refuses, and what cannot connect.
func TestSubscribeErrors(t *testing.T) {
	ctx := testCtx(t)
	if _, err := Dial(ctx, "ftp://example.com", nil); err == nil {
		t.Fatal("Dial accepted ftp://")
	}
	if _, err := Dial(ctx, "http://127.0.0.1:1", &Options{Transport: "carrier-pigeon"}); err == nil {
		t.Fatal("Dial accepted an unknown transport")
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			down := dial(t, "http://127.0.0.1:1", Options{Transport: tr})
			if _, err := down.Subscribe(ctx, []string{"a"}, nil); err == nil {
				t.Fatal("subscribed to a server that is not there")
			}
			if _, err := down.Subscribe(ctx, []string{"a b"}, nil); err == nil || !strings.Contains(err.Error(), "a b") {
				t.Fatalf("bad pattern: %v", err)
			}
			node := start(t, server.Config{Auth: "jwt", JWTSecret: secret})
			c := dial(t, node.URL, Options{Transport: tr, Token: token(t, "ann", time.Hour)})
			_, err := c.Subscribe(ctx, []string{"secret.x"}, nil)
			var herr *Error
			if !errors.As(err, &herr) || herr.Code != "forbidden" {
				t.Fatalf("subscribe outside the grant: %v, want forbidden", err)
			}
			anon := dial(t, node.URL, Options{Transport: tr})
			if _, err := anon.Subscribe(ctx, []string{"open.x"}, nil); !errors.As(err, &herr) || herr.Code != "unauthorized" {
				t.Fatalf("anonymous subscribe: %v, want unauthorized", err)
			}
			if _, err := anon.Publish(ctx, "open.x", "", 1); !errors.As(err, &herr) || herr.Status != 401 {
				t.Fatalf("anonymous publish: %v, want 401", err)
			}
		})
	}
}

const secret = "0123456789abcdef0123456789abcdef"

// token mints a token for sub that may subscribe to and publish on open.>
// and run echo actions.
func token(t *testing.T, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "exp": time.Now().Add(ttl).Unix(),
		"herald": map[string][]string{"subscribe": {"open.>"}, "publish": {"open.>"}, "actions": {"echo"}},
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A TokenFunc is asked for a token on every connection and request; a
// WebSocket subscription refreshes its token before it expires, on the
// same connection.
func TestTokenFunc(t *testing.T) {
	node := start(t, server.Config{Auth: "jwt", JWTSecret: secret})
	ctx := testCtx(t)
	var calls atomic.Int64
	c := dial(t, node.URL, Options{TokenFunc: func(context.Context) (string, error) {
		calls.Add(1)
		return token(t, "ann", 2*time.Second), nil
	}})
	s, err := c.Subscribe(ctx, []string{"open.tok"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := s.ClientID()
	if _, err := c.Publish(ctx, "open.tok", "", 1); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("TokenFunc called %d times for a subscribe and a publish", calls.Load())
	}
	nextEvent(t, s)
	// The refresher asks at three quarters of the token's life.
	wait.For(t, 10*time.Second, "a refresh", func() bool { return calls.Load() >= 4 })
	if _, err := c.Publish(ctx, "open.tok", "", 2); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, s); string(e.Data) != "2" {
		t.Fatalf("after the refresh: %s", e.Data)
	}
	if s.ClientID() != id {
		t.Fatalf("the connection changed from %s to %s: a refresh needs none", id, s.ClientID())
	}
	// A TokenFunc's error is the request's.
	bad := dial(t, node.URL, Options{TokenFunc: func(context.Context) (string, error) { return "", errors.New("no token today") }})
	if _, err := bad.Publish(ctx, "open.tok", "", 1); err == nil || !strings.Contains(err.Error(), "no token today") {
		t.Fatalf("publish with a failing TokenFunc: %v", err)
	}
}

// An API key publishes.
func TestAPIKey(t *testing.T) {
	node := start(t, server.Config{Auth: "jwt", JWTSecret: secret, APIKey: "backend-key-0123456789"})
	ctx := testCtx(t)
	c := dial(t, node.URL, Options{APIKey: "backend-key-0123456789"})
	if _, err := c.Publish(ctx, "any.topic", "", 1); err != nil {
		t.Fatal(err)
	}
	wrong := dial(t, node.URL, Options{APIKey: "wrong"})
	var herr *Error
	if _, err := wrong.Publish(ctx, "any.topic", "", 1); !errors.As(err, &herr) || herr.Status != 401 {
		t.Fatalf("wrong key: %v", err)
	}
}

// Action and Wait: the result comes from the result event, from the
// status when not subscribed, and at once for an idempotent repeat.
func TestActionWait(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			for _, o := range []*ActionOptions{nil, {NoSubscribe: true}, {IdempotencyKey: "once"}, {IdempotencyKey: "once"}} {
				h, err := c.Action(ctx, "echo", "act.t", map[string]int{"n": 7}, o)
				if err != nil {
					t.Fatal(err)
				}
				r, err := h.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if r.ID != h.ID || r.Status != "succeeded" || string(r.Result) != `{"n":7}` || r.Type != "echo" || r.Topic != "act.t" {
					t.Fatalf("%+v: result %+v", o, r)
				}
				st, err := c.ActionStatus(ctx, h.ID)
				if err != nil || !st.Final() || st.ID != r.ID || string(st.Result) != string(r.Result) || st.FinishedAt.IsZero() || !json.Valid(st.Raw) {
					t.Fatalf("status %+v, %v; want %+v", st, err, r)
				}
			}
			var herr *Error
			if _, err := c.ActionStatus(ctx, "nosuchaction"); !errors.As(err, &herr) || herr.Status != 404 {
				t.Fatalf("unknown action's status: %v", err)
			}
			_, err := c.Action(ctx, "no-such-action", "act.t", nil, nil)
			if !errors.As(err, &herr) || herr.Code != "unknown_action" {
				t.Fatalf("unknown action: %v", err)
			}
		})
	}
}

// A presence subscription is a member; another with presence events sees
// it join and leave.
func TestPresence(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			watch, err := c.Subscribe(ctx, []string{"room"}, &SubscribeOptions{PresenceEvents: true})
			if err != nil {
				t.Fatal(err)
			}
			member, err := c.Subscribe(ctx, []string{"room"}, &SubscribeOptions{Presence: true, Info: json.RawMessage(`{"name":"Ann"}`)})
			if err != nil {
				t.Fatal(err)
			}
			e := nextEvent(t, watch)
			var m struct {
				Client string          `json:"client"`
				Info   json.RawMessage `json:"info"`
			}
			if e.Type != "herald.join" || json.Unmarshal(e.Data, &m) != nil || m.Client != member.ClientID() {
				t.Fatalf("got %s %s, want the join of %s", e.Type, e.Data, member.ClientID())
			}
			if tr == "ws" && string(m.Info) != `{"name":"Ann"}` {
				t.Fatalf("info %s", m.Info)
			}
			member.Close()
			if e := nextEvent(t, watch); e.Type != "herald.leave" {
				t.Fatalf("got %s, want herald.leave", e.Type)
			}
			if _, ok := <-member.C(); ok {
				t.Fatal("a closed subscription delivered")
			}
			if member.Err() != nil {
				t.Fatalf("Err after Close: %v", member.Err())
			}
		})
	}
}

// A subscription ends with its context, and All then yields the
// context's error.
func TestEndsWithContext(t *testing.T) {
	node := start(t, server.Config{})
	c := dial(t, node.URL, Options{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	s, err := c.Subscribe(ctx, []string{"end"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "end", "", 1); err != nil {
		t.Fatal(err)
	}
	var got []string
	for m, err := range s.All() {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("All ended with %v, want context.Canceled", err)
			}
			got = append(got, "canceled")
			break
		}
		got = append(got, string(m.Event.Data))
		cancel()
	}
	if strings.Join(got, " ") != "1 canceled" {
		t.Fatalf("got %v", got)
	}
	c.Close()
	if _, err := c.Subscribe(testCtx(t), []string{"end"}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// Tokens that expire while subscribed: with a TokenFunc, an SSE stream,
// which the server ends at expiry, resumes with a fresh token, and a
// WebSocket refreshes on the same connection; with a fixed token the
// subscription ends unauthorized.
func TestTokenExpiry(t *testing.T) {
	// The server allows 30 s of clock skew: a token whose exp is 25 s in
	// the past has 5 s to live. The client, seeing it expired already,
	// refreshes after its least wait (1 s): 4 s before the expiry, room
	// for a loaded machine (with 2 s to live, a refresh late by a second
	// under load lost the connection).
	const ttl = -25 * time.Second
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{Auth: "jwt", JWTSecret: secret})
			ctx := testCtx(t)
			var calls atomic.Int64
			c := dial(t, node.URL, Options{Transport: tr, TokenFunc: func(context.Context) (string, error) {
				calls.Add(1)
				return token(t, "ann", ttl), nil
			}})
			s, err := c.Subscribe(ctx, []string{"open.exp"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			// An event gives the subscription its cursor, to resume from.
			if _, err := c.Publish(ctx, "open.exp", "", "first"); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s)
			id := s.ClientID()
			// Past the first token's expiry (5 s), with tokens asked for
			// since: a reconnect (SSE) or refreshes (WebSocket).
			subscribed := time.Now()
			wait.For(t, 30*time.Second, "the first token's expiry", func() bool {
				return time.Since(subscribed) > 6*time.Second && calls.Load() >= 4
			})
			if _, err := c.Publish(ctx, "open.exp", "", "still here"); err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); string(e.Data) != `"still here"` {
				t.Fatalf("got %s", e.Data)
			}
			if same := s.ClientID() == id; same != (tr == "ws") {
				t.Fatalf("%s: connection %s then %s", tr, id, s.ClientID())
			}

			fixed := dial(t, node.URL, Options{Transport: tr, Token: token(t, "ann", ttl)})
			s, err = fixed.Subscribe(ctx, []string{"open.exp"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for range s.C() {
			}
			var herr *Error
			if err := s.Err(); !errors.As(err, &herr) || herr.Code != "unauthorized" {
				t.Fatalf("the fixed token's subscription ended with %v, want unauthorized", err)
			}
		})
	}
}

// Conflation: a burst of one key's values arrives as fewer events, the
// last value always among them.
func TestConflate(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			s, err := c.Subscribe(ctx, []string{"cf"}, &SubscribeOptions{Conflate: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			drafts := make([]Draft, 50)
			for i := range drafts {
				drafts[i] = Draft{Topic: "cf", Key: "price", Data: i}
			}
			if _, err := c.PublishBatch(ctx, drafts); err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				e := nextEvent(t, s)
				n++
				if string(e.Data) == "49" {
					break
				}
			}
			if n >= 50 {
				t.Fatalf("%d events for 50 values of one key: not conflated", n)
			}
		})
	}
}

// Which answers end a subscription and which are retried.
func TestPermanent(t *testing.T) {
	for _, c := range []struct {
		e    Error
		want bool
	}{
		{Error{Status: 400, Code: "invalid_pattern"}, true},
		{Error{Status: 401, Code: "unauthorized"}, true},
		{Error{Status: 403, Code: "forbidden"}, true},
		{Error{Status: 501, Code: "not_implemented"}, true},
		{Error{Status: 429, Code: "rate_limited"}, false},
		{Error{Status: 503, Code: "unavailable"}, false},
		{Error{Status: 502, Code: "http_502"}, false},
		{Error{Code: "forbidden"}, true},
		{Error{Code: "unavailable"}, false},
		{Error{Code: "rate_limited"}, false},
	} {
		if got := c.e.permanent(); got != c.want {
			t.Errorf("%v: permanent %v, want %v", &c.e, got, c.want)
		}
	}
}

// A caller that may run an action but not subscribe to its topic still
// gets its result: Wait polls the status.
func TestActionWaitWithoutSubscribeGrant(t *testing.T) {
	node := start(t, server.Config{Auth: "jwt", JWTSecret: secret})
	ctx := testCtx(t)
	c := dial(t, node.URL, Options{Token: token(t, "ann", time.Hour)})
	h, err := c.Action(ctx, "echo", "private.results", "ping", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.sub != nil {
		t.Fatal("subscribed to a topic outside the grant")
	}
	r, err := h.Wait(ctx)
	if err != nil || r.Status != "succeeded" || string(r.Result) != `"ping"` {
		t.Fatalf("Wait: %+v, %v", r, err)
	}
}

// Wait takes the result event of its own action, by its action_id: while
// an action's backend holds it, others on the same topic finish, and
// their result events come first on its subscription.
func TestActionWaitTakesItsOwnResult(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var a struct{ Payload json.RawMessage }
				if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				if string(a.Payload) == `"held"` {
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write(a.Payload)
			}))
			t.Cleanup(backend.Close)
			var once sync.Once
			let := func() { once.Do(func() { close(release) }) }
			t.Cleanup(let) // before the backend closes: cleanups run last first
			node := start(t, server.Config{ActionUpstreams: []server.Upstream{{Type: "gate", URL: backend.URL}}})
			c := dial(t, node.URL, Options{Transport: tr})
			ctx := testCtx(t)
			held, err := c.Action(ctx, "gate", "act.own", "held", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			for i := range 3 {
				h, err := c.Action(ctx, "gate", "act.own", i, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r, err := h.Wait(ctx); err != nil || r.ID != h.ID || string(r.Result) != strconv.Itoa(i) {
					t.Fatalf("action %d: %+v, %v", i, r, err)
				}
			}
			let()
			r, err := held.Wait(ctx)
			if err != nil || r.ID != held.ID || string(r.Result) != `"held"` {
				t.Fatalf("the held action's Wait: %+v, %v; want its own result, \"held\"", r, err)
			}
		})
	}
}
