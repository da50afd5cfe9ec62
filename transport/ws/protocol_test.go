package ws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/ws"
)

func TestSubscribeAckPrecedesReplayedEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	var published []*hub.Message
	for i := range 5 {
		published = append(published, e.publish("orders.42", map[string]int{"n": i}))
	}

	c := e.dial(nil)
	if got := c.c.Subprotocol(); got != ws.Subprotocol {
		t.Errorf("subprotocol %q, want %q", got, ws.Subprotocol)
	}
	c.send(map[string]any{"op": "subscribe", "ref": "s-1", "topics": []string{"orders.*"}, "since": published[1].ID.String()})
	if f := c.expect("ok"); string(f.Ref) != `"s-1"` {
		t.Fatalf("ok %s: want ref \"s-1\"", f)
	}
	for _, m := range published[2:] {
		checkEvent(t, c.expect("event"), m)
	}
	live := e.publish("orders.42", map[string]any{"live": true, "s": "a\"b"})
	checkEvent(t, c.expect("event"), live)

	// A number ref comes back as a number; no ref, no "ref" field.
	c.send(`{"op":"subscribe","ref":42,"topics":["orders.43"]}`)
	if f := c.expect("ok"); string(f.Ref) != "42" {
		t.Fatalf("ok %s: want ref 42", f)
	}
	c.send(`{"op":"subscribe","topics":["orders.44"]}`)
	if f := c.expect("ok"); f.Ref != nil || strings.Contains(string(f.raw), "ref") {
		t.Fatalf("ok %s: want no ref", f)
	}
	c.send(`{"op":"ping","ref":{"k":[1,"x"]}}`)
	if f := c.expect("pong"); string(f.Ref) != `{"k":[1,"x"]}` {
		t.Fatalf("pong %s: want the object ref verbatim", f)
	}
}

// checkEvent checks that f is m framed as {"op":"event", envelope fields}.
func checkEvent(t *testing.T, f frame, m *hub.Message) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(f.raw, &fields); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"data", "id", "op", "time", "topic", "type"}; !slices.Equal(keys, want) {
		t.Fatalf("event %s: fields %v, want %v", f, keys, want)
	}
	if want := `{"op":"event",` + string(m.Envelope()[1:]); string(f.raw) != want {
		t.Fatalf("event\n got %s\nwant %s", f, want)
	}
	if f.ID != m.ID.String() || f.Topic != m.Topic || f.Type != m.Type || string(f.Data) != string(m.Data) {
		t.Fatalf("event %s does not match %+v", f, m.Event)
	}
	if _, err := time.Parse(time.RFC3339Nano, f.Time); err != nil {
		t.Fatalf("event %s: time: %v", f, err)
	}
}

func TestClientWithoutSubprotocolIsAccepted(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(&websocket.DialOptions{Subprotocols: []string{}})
	if got := c.c.Subprotocol(); got != "" {
		t.Errorf("subprotocol %q, want none", got)
	}
	c.roundTrip("p")
}

func TestPublishOpAndUnsubscribe(t *testing.T) {
	e := newEnv(t, envOptions{})
	sub := e.dial(nil)
	sub.subscribe("", "chat.room1", "chat.marker")
	pub := e.dial(nil)

	pub.send(`{"op":"publish","ref":7,"topic":"chat.room1","type":"chat.msg","data":{"text":"hi"}}`)
	ok := pub.expect("ok")
	if string(ok.Ref) != "7" || ok.ID == "" {
		t.Fatalf("publish reply %s: want ref 7 and an id", ok)
	}
	ev := sub.expect("event")
	if ev.ID != ok.ID || ev.Topic != "chat.room1" || ev.Type != "chat.msg" || string(ev.Data) != `{"text":"hi"}` || ev.Key != nil {
		t.Fatalf("event %s does not match the publish (id %s)", ev, ok.ID)
	}

	// With a key, the event carries it.
	pub.send(`{"op":"publish","ref":8,"topic":"chat.room1","key":"user:42","data":{"typing":true}}`)
	ok = pub.expect("ok")
	ev = sub.expect("event")
	if ev.ID != ok.ID || ev.Key == nil || *ev.Key != "user:42" || string(ev.Data) != `{"typing":true}` {
		t.Fatalf("event %s: want key user:42 (id %s)", ev, ok.ID)
	}

	// Without type and data: type "message", data null.
	pub.send(`{"op":"publish","topic":"chat.room1"}`)
	ok = pub.expect("ok")
	ev = sub.expect("event")
	if ev.ID != ok.ID || ev.Type != hub.DefaultType || string(ev.Data) != "null" {
		t.Fatalf("event %s: want type %q and data null", ev, hub.DefaultType)
	}

	sub.send(`{"op":"unsubscribe","ref":"u","topics":["chat.room1"]}`)
	if f := sub.expect("ok"); string(f.Ref) != `"u"` {
		t.Fatalf("unsubscribe reply %s", f)
	}
	// One connection, one order: had the room1 event been delivered, it would
	// arrive before the marker published after it.
	e.publish("chat.room1", "after unsubscribe")
	marker := e.publish("chat.marker", "marker")
	if f := sub.expect("event"); f.ID != marker.ID.String() {
		t.Fatalf("after unsubscribe got %s, want only the marker %s", f, marker.ID)
	}
}

func TestBadMessagesGetErrorsAndTheConnectionStays(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	cases := []struct {
		name    string
		binary  bool
		msg     string
		code    string
		wantRef string
	}{
		{name: "malformed JSON", msg: `{"op":"subscribe",`, code: "invalid_json"},
		{name: "not an object", msg: `[1,2]`, code: "invalid_json"},
		{name: "wrong field type", msg: `{"op":"subscribe","ref":3,"topics":"a.b"}`, code: "invalid_json", wantRef: "3"},
		{name: "unknown op", msg: `{"op":"frobnicate","ref":"r1"}`, code: "unknown_op", wantRef: `"r1"`},
		{name: "missing op", msg: `{"ref":"r2"}`, code: "unknown_op", wantRef: `"r2"`},
		{name: "missing topics", msg: `{"op":"subscribe","ref":"r3"}`, code: "invalid_pattern", wantRef: `"r3"`},
		{name: "empty topics", msg: `{"op":"subscribe","topics":[]}`, code: "invalid_pattern"},
		{name: "invalid pattern", msg: `{"op":"subscribe","ref":"r4","topics":["ok.topic","a.>.b"]}`, code: "invalid_pattern", wantRef: `"r4"`},
		{name: "invalid pattern in unsubscribe", msg: `{"op":"unsubscribe","topics":["a..b"]}`, code: "invalid_pattern"},
		{name: "publish to a pattern", msg: `{"op":"publish","ref":5,"topic":"a.*","data":1}`, code: "invalid_topic", wantRef: "5"},
		{name: "publish to an invalid topic", msg: `{"op":"publish","topic":"a b","data":1}`, code: "invalid_topic"},
		{name: "publish without topic", msg: `{"op":"publish","data":1}`, code: "invalid_topic"},
		{name: "publish reserved type", msg: `{"op":"publish","ref":6,"topic":"a.b","type":"herald.x","data":1}`, code: "invalid_type", wantRef: "6"},
		{name: "publish reserved type in capitals", msg: `{"op":"publish","ref":6,"topic":"a.b","type":"HERALD.reset","data":1}`, code: "invalid_type", wantRef: "6"},
		{name: "publish bad type", msg: `{"op":"publish","topic":"a.b","type":"has space"}`, code: "invalid_type"},
		{name: "publish bad key", msg: `{"op":"publish","ref":9,"topic":"a.b","key":"has space"}`, code: "invalid_request", wantRef: "9"},
		{name: "publish empty key", msg: `{"op":"publish","topic":"a.b","key":""}`, code: "invalid_request"},
		{name: "publish long key", msg: `{"op":"publish","topic":"a.b","key":"` + strings.Repeat("k", 129) + `"}`, code: "invalid_request"},
		{name: "binary frame", binary: true, msg: `{"op":"ping"}`, code: "unsupported_media_type"},
		{name: "action", msg: `{"op":"action","ref":8,"type":"echo","topic":"a.b","payload":{}}`, code: "unknown_action", wantRef: "8"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			typ := websocket.MessageText
			if tc.binary {
				typ = websocket.MessageBinary
			}
			if err := c.c.Write(c.rc, typ, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			f := c.expect("error")
			if f.Error == nil || f.Error.Code != tc.code || f.Error.Message == "" {
				t.Fatalf("reply %s: want code %q with a message", f, tc.code)
			}
			if string(f.Ref) != tc.wantRef {
				t.Fatalf("reply %s: ref %s, want %q", f, f.Ref, tc.wantRef)
			}
			if tc.wantRef == "" && strings.Contains(string(f.raw), `"ref"`) {
				t.Fatalf("reply %s: want no ref", f)
			}
			c.roundTrip(fmt.Sprintf("after-%d", i))
		})
	}
	if n := e.wsClients(); n != 1 {
		t.Fatalf("%d ws clients, want 1", n)
	}
}

func TestOversizeMessageCloses1009(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{ReadLimit: 1024}})
	c := e.dial(nil)
	c.send(`{"op":"ping","data":"` + strings.Repeat("x", 900) + `"}`) // under the limit
	c.expect("pong")
	c.send(`{"op":"ping","data":"` + strings.Repeat("x", 2000) + `"}`)
	if got := c.closeStatus(5 * time.Second); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v, want %v", got, websocket.StatusMessageTooBig)
	}
	wait.For(t, 5*time.Second, "the server to release the client", func() bool { return e.wsClients() == 0 })
}

func TestOversizeMessageWhileEventsFlow(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{ReadLimit: 1024}})
	c := e.dial(nil)
	c.subscribe("", "busy.t")
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		// Paced, so that the writer is busy but the client, which reads
		// nothing while it sends, is not dropped as a slow consumer first.
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := e.hub.Publish(context.Background(), hub.Draft{Topic: "busy.t", Data: json.RawMessage(`{"x":1}`)}); err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-published
	}()
	c.expect("event") // events are flowing
	c.send(`{"op":"ping","data":"` + strings.Repeat("x", 50000) + `"}`)
	if got := c.closeStatus(5 * time.Second); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v, want %v", got, websocket.StatusMessageTooBig)
	}
}

func TestDefaultReadLimitIs64KiB(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	pad := strings.Repeat("x", 60<<10)
	c.send(`{"op":"ping","pad":"` + pad + `"}`)
	c.expect("pong")
	c.send(`{"op":"ping","pad":"` + pad + pad + `"}`)
	if got := c.closeStatus(5 * time.Second); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v, want %v", got, websocket.StatusMessageTooBig)
	}
}

func TestOrigin(t *testing.T) {
	t.Run("cross origin rejected by default", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		_, err := e.tryDial(t, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
		if err == nil {
			t.Fatal("dial with a foreign Origin succeeded")
		}
		status, body := rawGet(t, e, http.Header{"Origin": {"http://evil.example"}}, true)
		checkJSONError(t, status, body, http.StatusForbidden, "forbidden")
		if n := e.wsClients(); n != 0 {
			t.Fatalf("%d ws clients after rejected handshakes, want 0", n)
		}
	})
	t.Run("same host and no origin accepted", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.dial(nil).roundTrip("no-origin")
		host := strings.TrimPrefix(e.srv.URL, "http://")
		e.dial(&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://" + host}}}).roundTrip("same")
	})
	t.Run("allowed origins", func(t *testing.T) {
		e := newEnv(t, envOptions{ws: ws.Options{AllowedOrigins: []string{"example.com"}}})
		e.dial(&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://example.com"}}}).roundTrip("allowed")
		_, err := e.tryDial(t, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://other.example"}}})
		if err == nil {
			t.Fatal("dial from an origin not in the list succeeded")
		}
	})
}

func TestNotAWebSocketHandshakeGetsJSONError(t *testing.T) {
	e := newEnv(t, envOptions{})
	status, body := rawGet(t, e, nil, false)
	checkJSONError(t, status, body, http.StatusUpgradeRequired, "invalid_request")
}

// rawGet sends GET /v1/ws, as a WebSocket handshake or a plain request.
func rawGet(t *testing.T, e *env, h http.Header, upgrade bool) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if upgrade {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	return resp.StatusCode, body
}

func checkJSONError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	if status != wantStatus || v.Error.Code != wantCode || v.Error.Message == "" {
		t.Fatalf("got %d %s, want %d with code %q", status, body, wantStatus, wantCode)
	}
}

func TestResetForUnusableCursors(t *testing.T) {
	e := newEnv(t, envOptions{hub: hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10})}})
	var first *hub.Message
	for i := range 30 {
		m := e.publish("feed.a", i)
		if first == nil {
			first = m
		}
	}
	head := e.publish("feed.b", "head")

	other, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	foreign, err := other.Publish(context.Background(), hub.Draft{Topic: "feed.a"})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, since, reason string
	}{
		{"too old", first.ID.String(), hub.ReasonHistoryGone},
		{"another hub", foreign[0].ID.String(), hub.ReasonEpochChanged},
		{"malformed", "not-a-cursor!", hub.ReasonUnknownCursor},
		{"from the future", hub.Cursor{Epoch: head.ID.Epoch, Seq: head.ID.Seq + 100}.String(), hub.ReasonUnknownCursor},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(nil)
			c.t = t
			c.send(map[string]any{"op": "subscribe", "ref": 1, "topics": []string{"feed.a", "feed.*"}, "since": tc.since})
			c.expect("ok")
			r := c.expect("reset")
			if r.Reason != tc.reason || !slices.Equal(r.Topics, []string{"feed.a", "feed.*"}) {
				t.Fatalf("reset %s: want reason %q and both topics", r, tc.reason)
			}
			cur, err := hub.ParseCursor(r.ID)
			if err != nil || cur.Epoch != head.ID.Epoch || cur.Seq < head.ID.Seq {
				t.Fatalf("reset %s: id should be the head cursor (at least %s)", r, head.ID)
			}
			live := e.publish("feed.a", "live "+tc.name)
			if f := c.expect("event"); f.ID != live.ID.String() {
				t.Fatalf("after reset got %s, want live event %s", f, live.ID)
			}
			// Resuming from the reset's id works without another reset.
			c2 := e.dial(nil)
			c2.t = t
			c2.subscribe(r.ID, "feed.a")
			if f := c2.expect("event"); f.ID != live.ID.String() {
				t.Fatalf("resume from reset id got %s, want %s", f, live.ID)
			}
		})
	}
}

func TestShutdownClosesEveryConnectionWith1001(t *testing.T) {
	e := newEnv(t, envOptions{})
	var clients []*client
	for range 20 {
		c := e.dial(nil)
		c.subscribe("", "news.>")
		clients = append(clients, c)
	}
	idle := e.dial(nil) // never subscribed
	clients = append(clients, idle)
	wait.For(t, 5*time.Second, "21 clients", func() bool { return e.wsClients() == 21 })

	start := time.Now()
	e.hub.Shutdown()
	for i, c := range clients {
		if got := c.closeStatus(5 * time.Second); got != websocket.StatusGoingAway {
			t.Fatalf("client %d: close status %v, want %v", i, got, websocket.StatusGoingAway)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.handler.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	t.Logf("shutdown of 21 connections took %v", time.Since(start))

	// New connections are refused with a JSON 503 while shutting down.
	status, body := rawGet(t, e, nil, true)
	checkJSONError(t, status, body, http.StatusServiceUnavailable, "unavailable")
}

func TestWaitIsBoundedByItsContext(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	c.roundTrip("x")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.handler.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil with a connection open")
	}
}

// Messages sent back to back, many per TCP segment, are each answered, in order.
func TestPipelinedMessages(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	const n = 500
	var burst []byte
	for i := range n {
		burst = append(burst, textFrame(fmt.Sprintf(`{"op":"ping","ref":%d}`, i))...)
	}
	r := e.rawDial(nil, burst) // the whole burst in the handshake's write
	for i := range n {
		if f := r.readText(); f.Op != "pong" || string(f.Ref) != fmt.Sprint(i) {
			t.Fatalf("reply %d: %s", i, f)
		}
	}
	// And over a normal client, without waiting between messages.
	for i := range n {
		c.send(map[string]any{"op": "ping", "ref": i})
	}
	for i := range n {
		if f := c.expect("pong"); string(f.Ref) != fmt.Sprint(i) {
			t.Fatalf("reply %d: %s", i, f)
		}
	}
}

// A message split into several frames is one message.
func TestFragmentedMessage(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	w, err := c.c.Writer(c.rc, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{`{"op":"sub`, `scribe","ref":"frag","top`, `ics":["frag.t"]}`} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if f := c.expect("ok"); string(f.Ref) != `"frag"` {
		t.Fatalf("got %s", f)
	}
	m := e.publish("frag.t", 1)
	if f := c.expect("event"); f.ID != m.ID.String() {
		t.Fatalf("got %s, want %s", f, m.ID)
	}
}

// A control frame between the fragments of a message is answered, and the
// message still arrives whole.
func TestPingBetweenFragments(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.rawDial(nil)
	first := clientFrame(0x1, []byte(`{"op":"subscribe","ref":"f",`))
	first[0] &^= 0x80 // not the final fragment
	if _, err := r.nc.Write(first); err != nil {
		t.Fatal(err)
	}
	if _, err := r.nc.Write(clientFrame(0x9, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	// The pong proves the server read the first fragment and the ping, and
	// is now waiting for the rest of the message.
	op, p, err := r.read(10 * time.Second)
	if err != nil || op != 0xA || string(p) != "hi" {
		t.Fatalf("got opcode %d %q, %v; want the pong", op, p, err)
	}
	if _, err := r.nc.Write(clientFrame(0x0, []byte(`"topics":["frag.x"]}`))); err != nil {
		t.Fatal(err)
	}
	if f := r.readText(); f.Op != "ok" || string(f.Ref) != `"f"` {
		t.Fatalf("got %s, want the subscribe's ok", f)
	}
	m := e.publish("frag.x", 1)
	if f := r.readText(); f.ID != m.ID.String() {
		t.Fatalf("got %s, want event %s", f, m.ID)
	}
}

// TestFloodCloses4029 sends messages far faster than the connection's
// message rate: the server closes with 4029 and still serves others.
func TestFloodCloses4029(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{MessageRate: 10, MessageBurst: 20}})
	c := e.dial(nil)
	flooder := e.dial(nil)
	for i := range 100 {
		flooder.send(map[string]any{"op": "ping", "ref": i})
	}
	if got := flooder.closeStatus(5 * time.Second); got != ws.StatusRateLimited {
		t.Fatalf("flood: close %v, want 4029", got)
	}
	c.send(map[string]any{"op": "ping", "ref": "still"})
	if f := c.expect("pong"); string(f.Ref) != `"still"` {
		t.Errorf("another connection after the flood: %s", f)
	}
}

// TestTopicsPerConnection refuses a subscribe that would take a connection
// past MaxTopics, and keeps what it had.
func TestTopicsPerConnection(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{MaxTopics: 3}})
	c := e.dial(nil)
	c.send(map[string]any{"op": "subscribe", "ref": 1, "topics": []string{"a", "b"}})
	c.expect("ok")
	c.send(map[string]any{"op": "subscribe", "ref": 2, "topics": []string{"c", "d"}})
	if f := c.expect("error"); !strings.Contains(string(f.raw), `"too_large"`) {
		t.Errorf("past the limit: %s", f)
	}
	c.send(map[string]any{"op": "subscribe", "ref": 3, "topics": []string{"c"}})
	c.expect("ok")
}

// TestLargeEventFrames: events larger than a cork buffer, written from the
// shared message rather than copied, arrive whole and in order between small
// ones of the same batch, each as {"op":"event"} plus its envelope.
func TestLargeEventFrames(t *testing.T) {
	e := newEnv(t, envOptions{hub: hub.Options{QueueBytes: 1 << 20}})
	c := e.dial(nil)
	c.subscribe("", "large.*")
	large := json.RawMessage(`"` + strings.Repeat("L", 200<<10) + `"`)
	ms, err := e.hub.Publish(context.Background(),
		hub.Draft{Topic: "large.a", Data: json.RawMessage(`1`)},
		hub.Draft{Topic: "large.b", Data: large},
		hub.Draft{Topic: "large.c", Data: large},
		hub.Draft{Topic: "large.d", Data: json.RawMessage(`2`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		f := c.expect("event")
		if want := `{"op":"event",` + string(m.Envelope()[1:]); string(f.raw) != want {
			t.Fatalf("event %s: frame of %d bytes differs from its envelope (%d bytes)", m.ID, len(f.raw), len(want))
		}
	}
}
