package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/server"
)

// presenceBrokers are the brokers that keep presence.
var presenceBrokers = []struct {
	name   string
	broker func(testing.TB) string
}{
	{"memory", func(testing.TB) string { return "memory" }},
	{"redis", redistest.URL},
	{"nats", natstest.BrokerURL},
}

// wsMsg is any server message of the WebSocket protocol.
type wsMsg struct {
	Op     string          `json:"op"`
	Ref    json.RawMessage `json:"ref"`
	Client string          `json:"client"`
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Topic  string          `json:"topic"`
	Key    string          `json:"key"`
	Data   json.RawMessage `json:"data"`
	Error  struct{ Code string }
}

type member struct {
	Client string          `json:"client"`
	User   *string         `json:"user"`
	Info   json.RawMessage `json:"info"`
}

// presenceWS is a WebSocket to a node, read by a goroutine of its own.
type presenceWS struct {
	c    *websocket.Conn
	msgs chan wsMsg
}

func openWS(t *testing.T, ctx context.Context, in *heraldtest.Node, token string) *presenceWS {
	t.Helper()
	u := "ws" + strings.TrimPrefix(in.URL, "http") + "/v1/ws"
	if token != "" {
		u += "?access_token=" + url.QueryEscape(token)
	}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"}, HTTPClient: &http.Client{Transport: in.Client.Transport},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w := &presenceWS{c: c, msgs: make(chan wsMsg, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(w.msgs)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			var m wsMsg
			if json.Unmarshal(b, &m) == nil {
				w.msgs <- m
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow(); <-done })
	return w
}

func (w *presenceWS) send(t *testing.T, msg string) {
	t.Helper()
	if err := w.c.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

// next returns the next message that is not an event of another type
// than presence ones (events of other types are skipped).
func (w *presenceWS) next(t *testing.T) wsMsg {
	t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			t.Fatal("the WebSocket closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for a WebSocket message")
	}
	return wsMsg{}
}

// request sends msg and returns its reply (an ok or an error).
func (w *presenceWS) request(t *testing.T, msg string) wsMsg {
	t.Helper()
	w.send(t, msg)
	for {
		if m := w.next(t); m.Op != "event" {
			return m
		}
	}
}

// presenceEvent waits for the next join or leave.
func (w *presenceWS) presenceEvent(t *testing.T) (typ string, m member) {
	t.Helper()
	for {
		e := w.next(t)
		if e.Op == "event" && strings.HasPrefix(e.Type, "herald.") {
			if err := json.Unmarshal(e.Data, &m); err != nil {
				t.Fatalf("member %s: %v", e.Data, err)
			}
			if e.Key != m.Client {
				t.Errorf("%s key %q, member %q", e.Type, e.Key, m.Client)
			}
			return e.Type, m
		}
	}
}

func (w *presenceWS) expect(t *testing.T, typ, client string) member {
	t.Helper()
	gotType, m := w.presenceEvent(t)
	if gotType != typ || m.Client != client {
		t.Fatalf("got %s of %s, want %s of %s", gotType, m.Client, typ, client)
	}
	return m
}

type presenceBody struct {
	ID      string   `json:"id"`
	Members []member `json:"members"`
	Clients int      `json:"clients"`
	Users   int      `json:"users"`
}

func getPresence(t *testing.T, in *heraldtest.Node, topic string) presenceBody {
	t.Helper()
	status, body := in.Get(t, "/v1/topics/"+topic+"/presence")
	if status != http.StatusOK {
		t.Fatalf("GET presence: %d %s", status, body)
	}
	var p presenceBody
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("presence %s: %v", body, err)
	}
	return p
}

// openPresenceSSE opens a stream with the query and returns its
// Herald-Client and a function that ends it.
func openPresenceSSE(t *testing.T, in *heraldtest.Node, query string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v1/events?"+query, nil)
	resp, err := (&http.Client{Transport: in.Client.Transport}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /v1/events?%s: %d", query, resp.StatusCode)
	}
	stop := func() { cancel(); resp.Body.Close() }
	t.Cleanup(stop)
	return resp.Header.Get("Herald-Client"), stop
}

// WebSocket and SSE members join and leave (unsubscribe, close), seen by a
// subscriber that asked for presence events and in GET presence.
func TestPresenceWSAndSSE(t *testing.T) {
	for _, b := range presenceBrokers {
		t.Run(b.name, func(t *testing.T) {
			in := start(t, server.Config{Broker: b.broker(t)})
			ctx := context.Background()
			watcher := openWS(t, ctx, in, "")
			ok := watcher.request(t, `{"op":"subscribe","ref":1,"topics":["room.1"],"presence_events":true}`)
			if ok.Op != "ok" || ok.Client == "" {
				t.Fatalf("subscribe reply %+v, want ok with the client ID", ok)
			}
			a := openWS(t, ctx, in, "")
			okA := a.request(t, `{"op":"subscribe","ref":2,"topics":["room.1"],"presence":true,"info":{"name":"Ann"}}`)
			if okA.Op != "ok" || okA.Client == "" || okA.Client == ok.Client {
				t.Fatalf("member's subscribe reply %+v", okA)
			}
			m := watcher.expect(t, "herald.join", okA.Client)
			if m.User != nil || string(m.Info) != `{"name":"Ann"}` {
				t.Errorf("member = %+v %s, want no user and the info", m, m.Info)
			}
			sseID, stopSSE := openPresenceSSE(t, in, "topic=room.1&presence=1")
			if sseID == "" {
				t.Fatal("the SSE response has no Herald-Client")
			}
			watcher.expect(t, "herald.join", sseID)
			p := getPresence(t, in, "room.1")
			if p.Clients != 2 || p.Users != 0 || len(p.Members) != 2 || p.Members[0].Client != okA.Client || p.Members[1].Client != sseID {
				t.Errorf("presence = %+v, want the WS then the SSE member", p)
			}
			a.request(t, `{"op":"unsubscribe","ref":3,"topics":["room.1"]}`)
			watcher.expect(t, "herald.leave", okA.Client)
			stopSSE()
			watcher.expect(t, "herald.leave", sseID)
			c := openWS(t, ctx, in, "")
			okC := c.request(t, `{"op":"subscribe","ref":4,"topics":["room.1"],"presence":true}`)
			watcher.expect(t, "herald.join", okC.Client)
			c.c.Close(websocket.StatusNormalClosure, "")
			watcher.expect(t, "herald.leave", okC.Client)
			if p := getPresence(t, in, "room.1"); p.Clients != 0 || len(p.Members) != 0 {
				t.Errorf("presence after every leave = %+v", p)
			}
			// A subscriber that did not ask sees none of it: its first event
			// is an ordinary one published now.
			plain := openWS(t, ctx, in, "")
			plain.request(t, `{"op":"subscribe","ref":5,"topics":["room.1"],"rewind":10}`)
			if status, body := in.Post(t, "/v1/publish", `{"topic":"room.1","data":"hi"}`); status != http.StatusOK {
				t.Fatalf("publish: %d %s", status, body)
			}
			if e := plain.next(t); e.Op != "event" || e.Type != "message" {
				t.Errorf("a subscriber without presence events got %+v first", e)
			}
		})
	}
}

// Bad presence requests get the protocol's errors, and the WebSocket stays
// usable.
func TestPresenceBadInput(t *testing.T) {
	in := start(t, server.Config{})
	w := openWS(t, context.Background(), in, "")
	for msg, code := range map[string]string{
		`{"op":"subscribe","topics":["room.*"],"presence":true}`:                                                  "invalid_request",
		`{"op":"subscribe","topics":["room.1","a.>"],"presence":true}`:                                            "invalid_request",
		`{"op":"subscribe","topics":["room.1"],"presence":true,"info":[1]}`:                                       "invalid_request",
		`{"op":"subscribe","topics":["room.1"],"presence":true,"info":"x"}`:                                       "invalid_request",
		`{"op":"subscribe","topics":["room.1"],"presence":"yes"}`:                                                 "invalid_json",
		`{"op":"subscribe","topics":["room.1"],"presence_events":1}`:                                              "invalid_json",
		`{"op":"subscribe","topics":["room.1"],"presence":true,"info":{"a":"` + strings.Repeat("x", 1100) + `"}}`: "invalid_request",
	} {
		if r := w.request(t, msg); r.Op != "error" || r.Error.Code != code {
			t.Errorf("%.80s: reply %+v, want error %s", msg, r, code)
		}
	}
	if r := w.request(t, `{"op":"ping","ref":9}`); r.Op != "pong" {
		t.Fatalf("after the errors: %+v, want pong", r)
	}
	if p := getPresence(t, in, "room.1"); p.Clients != 0 {
		t.Errorf("a refused subscribe joined: %+v", p)
	}
	for q, code := range map[string]string{
		"topic=room.*&presence=1":            "invalid_request",
		"topic=room.1&presence=maybe":        "invalid_request",
		"topic=room.1&presence_events=2":     "invalid_request",
		"topic=room.1&presence=1&presence=1": "invalid_request",
	} {
		status, body := in.Get(t, "/v1/events?"+q)
		if status != http.StatusBadRequest || !strings.Contains(string(body), `"code":"`+code+`"`) {
			t.Errorf("GET /v1/events?%s: %d %s, want 400 %s", q, status, body, code)
		}
	}
	if status, body := in.Get(t, "/v1/topics/a.*/presence"); status != http.StatusBadRequest {
		t.Errorf("presence of a pattern: %d %s, want 400", status, body)
	}
}

// A member whose token expires leaves; an SSE member's user and info come
// from its token.
func TestPresenceTokenExpiry(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	in := start(t, server.Config{Auth: "jwt", JWTSecret: secret})
	mint := func(sub string, exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "exp": exp.Unix(),
			"herald": map[string]any{"subscribe": []string{"room.>"}, "info": map[string]string{"name": sub}},
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	watcher := openWS(t, context.Background(), in, mint("watcher", time.Now().Add(time.Hour)))
	watcher.request(t, `{"op":"subscribe","topics":["room.x"],"presence_events":true}`)
	// Accepted within the 30 s leeway, it expires 2 s from now.
	short := mint("brief", time.Now().Add(-28*time.Second))
	id, _ := openPresenceSSE(t, in, "topic=room.x&presence=1&access_token="+url.QueryEscape(short))
	m := watcher.expect(t, "herald.join", id)
	if m.User == nil || *m.User != "brief" || string(m.Info) != `{"name":"brief"}` {
		t.Errorf("SSE member = %+v %s, want the token's sub and herald.info", m, m.Info)
	}
	ws := openWS(t, context.Background(), in, short)
	okWS := ws.request(t, `{"op":"subscribe","topics":["room.x"],"presence":true,"info":{"own":1}}`)
	m = watcher.expect(t, "herald.join", okWS.Client)
	if string(m.Info) != `{"own":1}` {
		t.Errorf("WS member info %s, want its own", m.Info)
	}
	left := map[string]bool{}
	for range 2 {
		typ, m := watcher.presenceEvent(t)
		if typ != "herald.leave" {
			t.Fatalf("got %s of %s, want leaves at the token's expiry", typ, m.Client)
		}
		left[m.Client] = true
	}
	if !left[id] || !left[okWS.Client] {
		t.Errorf("left %v, want %s and %s", left, id, okWS.Client)
	}
}

// GET presence is exact at its id while connections join and leave: the
// members equal the joins and leaves up to it, as a presence_events
// subscriber received them.
func TestPresenceExactWhileJoining(t *testing.T) {
	for _, b := range presenceBrokers {
		t.Run(b.name, func(t *testing.T) {
			in := start(t, server.Config{Broker: b.broker(t)})
			ctx := context.Background()
			watcher := openWS(t, ctx, in, "")
			watcher.request(t, `{"op":"subscribe","topics":["busy"],"presence_events":true}`)
			const n = 40
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := openWS(t, ctx, in, "")
					w.send(t, `{"op":"subscribe","topics":["busy"],"presence":true}`)
					if i%4 == 0 {
						w.send(t, `{"op":"unsubscribe","topics":["busy"]}`)
					}
				}()
			}
			var snaps []presenceBody
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			for loop := true; loop; {
				select {
				case <-done:
					loop = false
				default:
				}
				snaps = append(snaps, getPresence(t, in, "busy"))
			}
			// Every join and its leave, in the order of the log.
			type ev struct {
				seq    string
				typ    string
				client string
			}
			var evs []ev
			for len(evs) < n+n/4 {
				e := watcher.next(t)
				if e.Op == "event" {
					evs = append(evs, ev{e.ID, e.Type, e.Key})
				}
			}
			seqOf := func(id string) int {
				var s int
				fmt.Sscanf(id[strings.LastIndexByte(id, '-')+1:], "%d", &s)
				return s
			}
			for _, s := range append(snaps, getPresence(t, in, "busy")) {
				set := map[string]bool{}
				for _, e := range evs {
					if seqOf(e.seq) > seqOf(s.ID) {
						break
					}
					if e.typ == "herald.join" {
						set[e.client] = true
					} else {
						delete(set, e.client)
					}
				}
				var want, got []string
				for c := range set {
					want = append(want, c)
				}
				for _, m := range s.Members {
					got = append(got, m.Client)
				}
				sort.Strings(want)
				sort.Strings(got)
				if strings.Join(got, ",") != strings.Join(want, ",") || s.Clients != len(got) {
					t.Fatalf("presence at %s: %d members, the events up to it %d", s.ID, len(got), len(want))
				}
			}
			t.Logf("%d snapshots checked", len(snaps)+1)
		})
	}
}

// Two nodes on one Redis or NATS: a member of one is seen by a
// subscriber and in GET presence of the other.
func TestPresenceTwoNodes(t *testing.T) {
	for _, br := range presenceBrokers[1:] {
		t.Run(br.name, func(t *testing.T) {
			broker := br.broker(t)
			a := start(t, server.Config{Broker: broker})
			b := start(t, server.Config{Broker: broker})
			watcher := openWS(t, context.Background(), b, "")
			watcher.request(t, `{"op":"subscribe","topics":["hall"],"presence_events":true}`)
			id, stop := openPresenceSSE(t, a, "topic=hall&presence=1")
			watcher.expect(t, "herald.join", id)
			if p := getPresence(t, b, "hall"); p.Clients != 1 || p.Members[0].Client != id {
				t.Errorf("presence on the other node = %+v", p)
			}
			stop()
			watcher.expect(t, "herald.leave", id)
		})
	}
}
