package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

func TestPublishSingle(t *testing.T) {
	s := newServer(t, serverOptions{})
	r := s.do(t, http.MethodPost, "/v1/publish", "application/json; charset=utf-8",
		`{"topic":"orders.42","type":"order.created","data":{ "total" : 12.5, "items": [1, 2] },"extra":"ignored"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var out struct{ ID string }
	decodeStrict(t, r.body, &out)
	if _, err := hub.ParseCursor(out.ID); err != nil {
		t.Fatalf("id %q is not a cursor: %v", out.ID, err)
	}

	evs := s.history(t, "orders.42", "")
	if len(evs) != 1 {
		t.Fatalf("history has %d events, want 1", len(evs))
	}
	e := evs[0]
	if e.ID.String() != out.ID || e.Topic != "orders.42" || e.Type != "order.created" {
		t.Errorf("history event = %+v, want id %s, topic orders.42, type order.created", e, out.ID)
	}
	if string(e.Data) != `{"total":12.5,"items":[1,2]}` {
		t.Errorf("data = %s, want the published JSON, compacted", e.Data)
	}
	if time.Since(e.Time) > time.Minute || e.Time.IsZero() {
		t.Errorf("time = %v, want about now", e.Time)
	}
}

func TestPublishDefaults(t *testing.T) {
	s := newServer(t, serverOptions{})
	s.mustPublish(t, "a", "", "")
	r := s.publish(t, `{"topic":"a"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	// A topic of exactly 255 bytes is valid.
	long := strings.Repeat("b", 255)
	if r := s.publish(t, `{"topic":"`+long+`","data":null}`); r.status != http.StatusOK {
		t.Fatalf("255-byte topic: status %d, body %s", r.status, r.body)
	}
	for _, e := range s.history(t, "a", "") {
		if e.Type != "message" || string(e.Data) != "null" {
			t.Errorf("event %+v: want type \"message\" and data null by default", e)
		}
	}
	if n := len(s.history(t, long, "")); n != 1 {
		t.Errorf("history of the 255-byte topic has %d events, want 1", n)
	}
}

func TestPublishBatch(t *testing.T) {
	s := newServer(t, serverOptions{})
	r := s.publish(t, `{"events":[
		{"topic":"orders.1","type":"a","data":1},
		{"topic":"orders.2","type":"b","data":2},
		{"topic":"orders.1","data":3}
	]}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	var out struct{ IDs []string }
	decodeStrict(t, r.body, &out)
	if len(out.IDs) != 3 {
		t.Fatalf("ids = %v, want 3", out.IDs)
	}
	var prev hub.Cursor
	for i, id := range out.IDs {
		c, err := hub.ParseCursor(id)
		if err != nil {
			t.Fatalf("ids[%d] = %q is not a cursor: %v", i, id, err)
		}
		if i > 0 && (c.Epoch != prev.Epoch || c.Seq != prev.Seq+1) {
			t.Errorf("ids[%d] = %s does not follow %s", i, id, prev)
		}
		prev = c
	}
	one := s.history(t, "orders.1", "")
	if len(one) != 2 || one[0].ID.String() != out.IDs[0] || one[1].ID.String() != out.IDs[2] ||
		string(one[0].Data) != "1" || string(one[1].Data) != "3" || one[1].Type != "message" {
		t.Errorf("orders.1 history = %+v, want events 0 and 2 of the batch in order", one)
	}
	two := s.history(t, "orders.2", "")
	if len(two) != 1 || two[0].ID.String() != out.IDs[1] || two[0].Type != "b" {
		t.Errorf("orders.2 history = %+v, want event 1 of the batch", two)
	}
}

func TestPublishKey(t *testing.T) {
	s := newServer(t, serverOptions{})
	long := strings.Repeat("k", hub.MaxKeyLen)
	for _, body := range []string{
		`{"topic":"k.t","key":"user:1","data":1}`,
		`{"topic":"k.t","key":"user:1","data" : 1, "extra":0}`, // the encoding/json path
		`{"events":[{"topic":"k.t","key":"` + long + `","data":2},{"topic":"k.t","data":3}]}`,
	} {
		if r := s.publish(t, body); r.status != http.StatusOK {
			t.Fatalf("%s: status %d, body %s", body, r.status, r.body)
		}
	}
	evs := s.history(t, "k.t", "")
	want := []string{"user:1", "user:1", long, ""}
	if len(evs) != len(want) {
		t.Fatalf("history has %d events, want %d", len(evs), len(want))
	}
	for i, e := range evs {
		if e.Key != want[i] {
			t.Errorf("event %d has key %q, want %q", i, e.Key, want[i])
		}
	}
	for _, body := range []string{
		`{"topic":"k.t","key":""}`,
		`{"topic":"k.t","key":"a b"}`,
		`{"topic":"k.t","key":"` + long + `k"}`,
		`{"topic":"k.t","key":"é"}`,
		`{"events":[{"topic":"k.t","key":"ok"},{"topic":"k.t","key":"not/ok"}]}`,
	} {
		assertError(t, s.publish(t, body), http.StatusBadRequest, "invalid_request")
	}
	if n := len(s.history(t, "k.t", "")); n != len(want) {
		t.Errorf("refused publishes stored events: history has %d, want %d", n, len(want))
	}
}

func TestPublishBatchAllOrNothing(t *testing.T) {
	s := newServer(t, serverOptions{})
	r := s.publish(t, `{"events":[{"topic":"ok"},{"topic":"ok"},{"topic":"not ok"}]}`)
	assertError(t, r, http.StatusBadRequest, "invalid_topic")
	if evs := s.history(t, "ok", ""); len(evs) != 0 {
		t.Errorf("a rejected batch published %d events", len(evs))
	}
	// The log did not move: the next event gets the first position.
	id := s.mustPublish(t, "ok", "", "1")
	if c, _ := hub.ParseCursor(id); c.Seq != 1 {
		t.Errorf("first accepted event has cursor %s, want sequence 1", id)
	}
}

func TestPublishBodyLimitDefault(t *testing.T) {
	s := newServer(t, serverOptions{})
	data := strings.Repeat("x", 1<<20)
	r := s.publish(t, `{"topic":"a","data":"`+data+`"}`)
	assertError(t, r, http.StatusRequestEntityTooLarge, "too_large")
	small := strings.Repeat("x", 900<<10)
	if r := s.publish(t, `{"topic":"a","data":"`+small+`"}`); r.status != http.StatusOK {
		t.Errorf("a 900 KiB body under the 1 MiB default: status %d", r.status)
	}
}

func TestHistory(t *testing.T) {
	s := newServer(t, serverOptions{})
	var ids []string
	for i := range 10 {
		ids = append(ids, s.mustPublish(t, "dash.cpu", "sample", fmt.Sprint(i)))
		s.mustPublish(t, "dash.mem", "sample", fmt.Sprint(i)) // interleaved, other topic
	}
	check := func(query string, want []string) {
		t.Helper()
		evs := s.history(t, "dash.cpu", query)
		var got []string
		for _, e := range evs {
			got = append(got, e.ID.String())
			if e.Topic != "dash.cpu" {
				t.Errorf("%s: event of topic %s in dash.cpu history", query, e.Topic)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("history%s = %v, want %v", query, got, want)
		}
	}
	check("", ids)
	check("?limit=3", ids[7:])
	check("?after="+ids[4], ids[5:])
	check("?after="+ids[4]+"&limit=2", ids[5:7])
	check("?after="+ids[9], nil)

	// A topic without history is an empty list, not an error.
	if evs := s.history(t, "nothing.here", ""); len(evs) != 0 {
		t.Errorf("empty topic history = %v", evs)
	}
}

func TestHistoryLimits(t *testing.T) {
	s := newServer(t, serverOptions{})
	drafts := make([]hub.Draft, 1001)
	for i := range drafts {
		drafts[i] = hub.Draft{Topic: "many", Data: json.RawMessage(fmt.Sprint(i))}
	}
	if _, err := s.hub.Publish(context.Background(), drafts...); err != nil {
		t.Fatalf("failed to publish: %v", err)
	}
	evs := s.history(t, "many", "")
	if len(evs) != 100 || string(evs[0].Data) != "901" || string(evs[99].Data) != "1000" {
		t.Errorf("default history: %d events from %s, want the newest 100 (901..1000)", len(evs), firstData(evs))
	}
	evs = s.history(t, "many", "?limit=5000")
	if len(evs) != 1000 || string(evs[0].Data) != "1" {
		t.Errorf("limit=5000: %d events from %s, want it clamped to the newest 1000", len(evs), firstData(evs))
	}
}

func firstData(evs []hub.Event) string {
	if len(evs) == 0 {
		return "nothing"
	}
	return string(evs[0].Data)
}

func TestTopics(t *testing.T) {
	s := newServer(t, serverOptions{})
	sub := func(patterns ...string) {
		c, err := s.hub.NewClient("test")
		if err != nil {
			t.Fatalf("failed to create client: %v", err)
		}
		t.Cleanup(c.Close)
		var ps []hub.Pattern
		for _, p := range patterns {
			ps = append(ps, hub.MustPattern(p))
		}
		if err := c.Subscribe(hub.SubscribeRequest{Patterns: ps}); err != nil {
			t.Fatalf("failed to subscribe: %v", err)
		}
	}

	r := s.do(t, http.MethodGet, "/v1/topics", noContentType, "")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"topics":[]}` {
		t.Fatalf("empty hub: status %d, body %s, want {\"topics\":[]}", r.status, r.body)
	}

	sub("orders.*", "orders.1")
	sub("orders.*")
	sub("dash.>")
	s.mustPublish(t, "orders.1", "", "1")
	s.mustPublish(t, "orders.1", "", "2")
	s.mustPublish(t, "audit", "", "3")

	r = s.do(t, http.MethodGet, "/v1/topics", noContentType, "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	var out struct{ Topics []hub.TopicInfo }
	decodeStrict(t, r.body, &out)
	want := []hub.TopicInfo{
		{Topic: "audit", Subscribers: 0, Events: 1},
		{Topic: "dash.>", Subscribers: 1, Events: 0},
		{Topic: "orders.*", Subscribers: 2, Events: 0},
		{Topic: "orders.1", Subscribers: 1, Events: 2},
	}
	if fmt.Sprint(out.Topics) != fmt.Sprint(want) {
		t.Errorf("topics = %+v\nwant     %+v", out.Topics, want)
	}
}

func TestHealth(t *testing.T) {
	s := newServer(t, serverOptions{})
	for _, path := range []string{"/healthz", "/readyz"} {
		r := s.do(t, http.MethodGet, path, noContentType, "")
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
			t.Errorf("%s: status %d, body %s", path, r.status, r.body)
		}
		if r := s.do(t, http.MethodHead, path, noContentType, ""); r.status != http.StatusOK {
			t.Errorf("HEAD %s: status %d", path, r.status)
		}
	}

	s.hub.Shutdown()
	assertError(t, s.do(t, http.MethodGet, "/readyz", noContentType, ""), http.StatusServiceUnavailable, "unavailable")
	if r := s.do(t, http.MethodGet, "/healthz", noContentType, ""); r.status != http.StatusOK {
		t.Errorf("healthz after shutdown: status %d, want 200 (the process is still up)", r.status)
	}
	// Publishing keeps working during shutdown so in-flight requests finish.
	if r := s.publish(t, `{"topic":"late"}`); r.status != http.StatusOK {
		t.Errorf("publish after hub.Shutdown: status %d, body %s", r.status, r.body)
	}
}

// TestStreamingRoutesMounted checks that the SSE and WebSocket handlers are
// wired to their paths; their behaviour is tested in their own packages.
func TestStreamingRoutesMounted(t *testing.T) {
	s := newServer(t, serverOptions{})
	for _, path := range []string{"/v1/events", "/v1/ws"} {
		r := s.do(t, http.MethodGet, path, noContentType, "")
		if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
			t.Errorf("GET %s: status %d, want the route to reach its handler", path, r.status)
		}
	}
}
