package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// TestBadInput sends every kind of malformed request a client can make and
// checks the status, the error code and the error document's shape.
func TestBadInput(t *testing.T) {
	s := newServer(t, serverOptions{retain: 3, maxBody: 16 << 10, maxBatch: 5})

	// Five events into a log that retains three: the first two are gone.
	var cursors []string
	for i := range 5 {
		cursors = append(cursors, s.mustPublish(t, "gone", "tick", fmt.Sprint(i)))
	}
	first, err := hub.ParseCursor(cursors[0])
	if err != nil {
		t.Fatalf("publish returned a malformed cursor %q: %v", cursors[0], err)
	}
	otherEpoch := "zzzzzzzzzz-1"
	if first.Epoch == "zzzzzzzzzz" {
		otherEpoch = "yyyyyyyyyy-1"
	}

	const js = "application/json"
	long := strings.Repeat("a", 256)
	tooMany := `{"events":[` + strings.TrimSuffix(strings.Repeat(`{"topic":"a"},`, 6), ",") + `]}`
	huge := `{"topic":"a","data":"` + strings.Repeat("x", 20<<10) + `"}`
	// Beyond the 10,000 parameters net/url parses, it parses none.
	params := strings.Repeat("&x=1", 10000)

	cases := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		status      int
		code        string
		allow       string // expected Allow header, if any
	}{
		// Publish: JSON syntax and shape.
		{"invalid JSON", "POST", "/v1/publish", js, `{"topic":`, 400, "invalid_json", ""},
		{"invalid JSON syntax", "POST", "/v1/publish", js, `{topic:"a"}`, 400, "invalid_json", ""},
		{"trailing garbage", "POST", "/v1/publish", js, `{"topic":"a"} x`, 400, "invalid_json", ""},
		{"two objects", "POST", "/v1/publish", js, `{"topic":"a"}{"topic":"b"}`, 400, "invalid_json", ""},
		{"empty body", "POST", "/v1/publish", js, ``, 400, "invalid_json", ""},
		{"array body", "POST", "/v1/publish", js, `[{"topic":"a"}]`, 400, "invalid_json", ""},
		{"null body", "POST", "/v1/publish", js, `null`, 400, "invalid_json", ""},
		{"string body", "POST", "/v1/publish", js, `"a"`, 400, "invalid_json", ""},
		{"topic is a number", "POST", "/v1/publish", js, `{"topic":42}`, 400, "invalid_json", ""},
		{"type is an object", "POST", "/v1/publish", js, `{"topic":"a","type":{}}`, 400, "invalid_json", ""},
		{"events is an object", "POST", "/v1/publish", js, `{"events":{}}`, 400, "invalid_json", ""},
		{"event is a number", "POST", "/v1/publish", js, `{"events":[1]}`, 400, "invalid_json", ""},
		{"invalid UTF-8", "POST", "/v1/publish", js, "{\"topic\":\"a\",\"data\":\"\xff\xfe\"}", 400, "invalid_json", ""},

		// Publish: content type.
		{"wrong content type", "POST", "/v1/publish", "text/plain", `{"topic":"a"}`, 415, "unsupported_media_type", ""},
		{"form content type", "POST", "/v1/publish", "application/x-www-form-urlencoded", `topic=a`, 415, "unsupported_media_type", ""},
		{"missing content type", "POST", "/v1/publish", noContentType, `{"topic":"a"}`, 415, "unsupported_media_type", ""},
		{"content type prefix", "POST", "/v1/publish", "application/jsonx", `{"topic":"a"}`, 415, "unsupported_media_type", ""},
		{"malformed content type", "POST", "/v1/publish", "application/json; =", `{"topic":"a"}`, 415, "unsupported_media_type", ""},

		// Publish: topic and type.
		{"wildcard topic", "POST", "/v1/publish", js, `{"topic":"orders.*"}`, 400, "invalid_topic", ""},
		{"tail wildcard topic", "POST", "/v1/publish", js, `{"topic":"orders.>"}`, 400, "invalid_topic", ""},
		{"empty topic", "POST", "/v1/publish", js, `{"topic":""}`, 400, "invalid_topic", ""},
		{"missing topic", "POST", "/v1/publish", js, `{"data":1}`, 400, "invalid_topic", ""},
		{"null topic", "POST", "/v1/publish", js, `{"topic":null}`, 400, "invalid_topic", ""},
		{"256-byte topic", "POST", "/v1/publish", js, `{"topic":"` + long + `"}`, 400, "invalid_topic", ""},
		{"empty segment", "POST", "/v1/publish", js, `{"topic":"a..b"}`, 400, "invalid_topic", ""},
		{"space in topic", "POST", "/v1/publish", js, `{"topic":"a b"}`, 400, "invalid_topic", ""},
		{"reserved type", "POST", "/v1/publish", js, `{"topic":"a","type":"herald.reset"}`, 400, "invalid_type", ""},
		{"reserved type in capitals", "POST", "/v1/publish", js, `{"topic":"a","type":"HERALD.reset"}`, 400, "invalid_type", ""},
		{"reserved type capitalized", "POST", "/v1/publish", js, `{"topic":"a","type":"Herald.reset"}`, 400, "invalid_type", ""},
		{"invalid type chars", "POST", "/v1/publish", js, `{"topic":"a","type":"a/b"}`, 400, "invalid_type", ""},
		{"space in type", "POST", "/v1/publish", js, `{"topic":"a","type":"a b"}`, 400, "invalid_type", ""},
		{"65-byte type", "POST", "/v1/publish", js, `{"topic":"a","type":"` + strings.Repeat("t", 65) + `"}`, 400, "invalid_type", ""},

		// Publish: batch form.
		{"empty batch", "POST", "/v1/publish", js, `{"events":[]}`, 400, "invalid_request", ""},
		{"null batch", "POST", "/v1/publish", js, `{"events":null}`, 400, "invalid_request", ""},
		{"both forms", "POST", "/v1/publish", js, `{"topic":"a","events":[{"topic":"b"}]}`, 400, "invalid_request", ""},
		{"both forms via data", "POST", "/v1/publish", js, `{"data":null,"events":[{"topic":"b"}]}`, 400, "invalid_request", ""},
		{"bad topic in batch", "POST", "/v1/publish", js, `{"events":[{"topic":"a"},{"topic":"b.*"}]}`, 400, "invalid_topic", ""},
		{"reserved type in batch", "POST", "/v1/publish", js, `{"events":[{"topic":"a","type":"herald.x"}]}`, 400, "invalid_type", ""},
		{"reserved type in capitals in batch", "POST", "/v1/publish", js, `{"events":[{"topic":"a"},{"topic":"a","type":"HERALD.reset"}]}`, 400, "invalid_type", ""},
		{"batch too long", "POST", "/v1/publish", js, tooMany, 413, "too_large", ""},
		{"body too large", "POST", "/v1/publish", js, huge, 413, "too_large", ""},

		// Routing.
		{"unknown route", "GET", "/v1/nope", noContentType, "", 404, "not_found", ""},
		{"unknown root route", "GET", "/", noContentType, "", 404, "not_found", ""},
		{"trailing slash", "POST", "/v1/publish/", js, `{"topic":"a"}`, 404, "not_found", ""},
		{"double slash is not redirected", "POST", "//v1/publish", js, `{"topic":"a"}`, 404, "not_found", ""},
		{"history without topic", "GET", "/v1/topics//history", noContentType, "", 404, "not_found", ""},
		{"GET publish", "GET", "/v1/publish", noContentType, "", 405, "method_not_allowed", "POST"},
		{"POST topics", "POST", "/v1/topics", js, `{}`, 405, "method_not_allowed", "GET"},
		{"DELETE history", "DELETE", "/v1/topics/a/history", noContentType, "", 405, "method_not_allowed", "GET"},
		{"POST healthz", "POST", "/healthz", js, `{}`, 405, "method_not_allowed", "GET, HEAD"},
		{"POST events", "POST", "/v1/events", js, `{}`, 405, "method_not_allowed", "GET"},
		{"PUT ws", "PUT", "/v1/ws", js, `{}`, 405, "method_not_allowed", "GET"},

		// History.
		{"history gone", "GET", "/v1/topics/gone/history?after=" + cursors[0], noContentType, "", 410, "history_gone", ""},
		{"history other epoch", "GET", "/v1/topics/gone/history?after=" + otherEpoch, noContentType, "", 410, "history_gone", ""},
		{"malformed cursor", "GET", "/v1/topics/gone/history?after=garbage", noContentType, "", 400, "invalid_cursor", ""},
		{"cursor without seq", "GET", "/v1/topics/gone/history?after=abc-", noContentType, "", 400, "invalid_cursor", ""},
		{"limit not a number", "GET", "/v1/topics/gone/history?limit=abc", noContentType, "", 400, "invalid_request", ""},
		{"limit zero", "GET", "/v1/topics/gone/history?limit=0", noContentType, "", 400, "invalid_request", ""},
		{"limit negative", "GET", "/v1/topics/gone/history?limit=-3", noContentType, "", 400, "invalid_request", ""},
		{"limit fraction", "GET", "/v1/topics/gone/history?limit=1.5", noContentType, "", 400, "invalid_request", ""},
		{"history wildcard topic", "GET", "/v1/topics/orders.*/history", noContentType, "", 400, "invalid_topic", ""},
		{"history escaped wildcard", "GET", "/v1/topics/orders.%3E/history", noContentType, "", 400, "invalid_topic", ""},
		{"history 256-byte topic", "GET", "/v1/topics/" + long + "/history", noContentType, "", 400, "invalid_topic", ""},
		{"history empty segment", "GET", "/v1/topics/a..b/history", noContentType, "", 400, "invalid_topic", ""},

		// A query that cannot be read is refused whole, never read in part.
		{"history, too many parameters", "GET", "/v1/topics/gone/history?limit=1" + params, noContentType, "", 400, "invalid_request", ""},
		{"history, semicolon", "GET", "/v1/topics/gone/history?limit=1;after=x", noContentType, "", 400, "invalid_request", ""},
		{"history, bad escape", "GET", "/v1/topics/gone/history?limit=%zz", noContentType, "", 400, "invalid_request", ""},
		{"events, too many parameters", "GET", "/v1/events?topic=a" + params, noContentType, "", 400, "invalid_request", ""},
		{"events, bad escape", "GET", "/v1/events?topic=a%2", noContentType, "", 400, "invalid_request", ""},
		{"ws, too many parameters", "GET", "/v1/ws?x=1" + params, noContentType, "", 400, "invalid_request", ""},
		{"publish, too many parameters", "POST", "/v1/publish?x=1" + params, js, `{"topic":"a"}`, 400, "invalid_request", ""},
		{"topics, too many parameters", "GET", "/v1/topics?x=1" + params, noContentType, "", 400, "invalid_request", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(t, tc.method, tc.path, tc.contentType, tc.body)
			assertError(t, r, tc.status, tc.code)
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			// And a well-behaved client is still served.
			if ok := s.do(t, http.MethodGet, "/v1/topics/gone/history?limit=1", noContentType, ""); ok.status != http.StatusOK {
				t.Errorf("a normal request after it: %d %s", ok.status, ok.body)
			}
		})
	}

	// None of the rejected publishes reached the log.
	r := s.do(t, http.MethodGet, "/v1/topics", noContentType, "")
	if r.status != http.StatusOK {
		t.Fatalf("topics: status %d", r.status)
	}
	var out struct{ Topics []hub.TopicInfo }
	decodeStrict(t, r.body, &out)
	if len(out.Topics) != 1 || out.Topics[0].Topic != "gone" || out.Topics[0].Events != 3 {
		t.Errorf("after rejected publishes, topics = %+v, want only \"gone\" with its 3 retained events", out.Topics)
	}
}

// TestBatchErrorNamesTheEvent checks that a rejected batch says which event
// was wrong.
func TestBatchErrorNamesTheEvent(t *testing.T) {
	s := newServer(t, serverOptions{})
	r := s.publish(t, `{"events":[{"topic":"a"},{"topic":"a"},{"topic":"a","type":"no way"}]}`)
	assertError(t, r, http.StatusBadRequest, "invalid_type")
	if !strings.Contains(string(r.body), "events[2]") {
		t.Errorf("message should name events[2]: %s", r.body)
	}
}

// TestUnreadableQueryNamesTheCause checks that a refused query says why.
func TestUnreadableQueryNamesTheCause(t *testing.T) {
	s := newServer(t, serverOptions{})
	for query, cause := range map[string]string{
		"topic=a" + strings.Repeat("&x=1", 10000): "number of URL query parameters exceeded limit",
		"topic=a;b": "semicolon",
		"topic=%zz": "escape",
	} {
		r := s.do(t, http.MethodGet, "/v1/events?"+query, noContentType, "")
		assertError(t, r, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(string(r.body), cause) {
			t.Errorf("%.20s…: %s does not say %q", query, r.body, cause)
		}
	}
}
