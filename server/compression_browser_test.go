package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/server"
)

// TestBrowserCompression opens a WebSocket from a page in Chromium (the
// dashboard's page, beside its own connections), which offers
// permessage-deflate and compresses every message it sends: the connection
// negotiates the extension (ws.extensions), events under and over the
// compression threshold arrive intact, and the connection's stats show that
// the large ones went compressed.
func TestBrowserCompression(t *testing.T) {
	in := start(t, server.Config{})
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(in.URL+"/"))
	browsertest.Eval[bool](t, tb, `(() => {
		window.events = [];
		window.replies = {};
		const ws = new WebSocket('ws://' + location.host + '/v1/ws', 'herald.v1');
		window.sock = ws;
		ws.onopen = () => ws.send(JSON.stringify({op: 'subscribe', ref: 'sub', topics: ['browser.>']}));
		ws.onmessage = (e) => {
			const m = JSON.parse(e.data);
			if (m.op === 'event') window.events.push(m.data);
			else if (m.ref) window.replies[m.ref] = m;
		};
		return true;
	})()`)
	browsertest.WaitFor(t, tb, "the subscription", `window.replies.sub && window.replies.sub.op === 'ok'`)
	if ext := browsertest.Eval[string](t, tb, `window.sock.extensions`); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("ws.extensions = %q, want permessage-deflate", ext)
	}

	var want []any
	for i := range 6 {
		data := dashboardJSON(i)
		if i%2 == 1 {
			data = fmt.Sprintf(`{"seq":%d,"small":true}`, i)
		}
		var v any
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
		if status, body := in.Post(t, "/v1/publish", `{"topic":"browser.dash","data":`+data+`}`); status != http.StatusOK {
			t.Fatalf("publish: status %d, body %s", status, body)
		}
	}
	browsertest.WaitFor(t, tb, "every event", fmt.Sprintf(`window.events.length >= %d`, len(want)))
	var got []any
	if err := json.Unmarshal([]byte(browsertest.Eval[string](t, tb, `JSON.stringify(window.events)`)), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the page received %v,\nwant %v", got, want)
	}

	browsertest.Eval[bool](t, tb, `(() => { window.sock.send(JSON.stringify({op: 'stats', ref: 'st'})); return true; })()`)
	browsertest.WaitFor(t, tb, "the stats reply", `!!window.replies.st`)
	var st struct {
		Events int `json:"events"`
		Wire   int `json:"wire_bytes"`
		Bytes  int `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(browsertest.Eval[string](t, tb, `JSON.stringify(window.replies.st)`)), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %d events, %d bytes on the wire, %d uncompressed", st.Events, st.Wire, st.Bytes)
	if st.Events != len(want) || st.Wire >= st.Bytes/2 {
		t.Fatalf("stats %+v: the large events did not go compressed", st)
	}
	browsertest.NoErrors(t, tb)
}
