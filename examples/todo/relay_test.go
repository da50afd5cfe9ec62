package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// act runs an action through Herald, as another client would, and waits
// until it has succeeded.
func (a *todoApp) act(t *testing.T, body string) {
	t.Helper()
	r := post(t, a.c, a.herald+"/v1/actions", body)
	var accepted struct{ ID string }
	if r.status != http.StatusAccepted || json.Unmarshal([]byte(r.body), &accepted) != nil {
		t.Fatalf("action %s: %d %s", body, r.status, r.body)
	}
	wait.For(t, 10*time.Second, "action "+accepted.ID+" to succeed", func() bool {
		resp, err := a.c.Get(a.herald + "/v1/actions/" + accepted.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct{ Status string }
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		if st.Status == "failed" {
			t.Fatalf("action %s failed", body)
		}
		return st.Status == "succeeded"
	})
}

// TestRelayCut cuts the page's connection to Herald, the way a network
// does, while the list changes, and lets it through again: the page
// reconnects by itself and shows the list as it is then, in the same
// document, without loading a page. In "reset" Herald retains too few
// events to resume from where the page was, so the page gets a reset and
// the list from the state again.
func TestRelayCut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history int
	}{{"resume", 0}, {"reset", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			app := startTodo(t, heraldOptions{cors: true, history: tc.history}, "milk", "bread", "eggs")
			r := relay.Start(t, strings.TrimPrefix(app.herald, "http://"), relay.Options{})
			app.b.setHerald(r.URL(), app.api) // the page through the relay, the backend direct

			tb := browsertest.New(t)()
			tb.Do(t, chromedp.Navigate(app.page+"/"))
			browsertest.WaitFor(t, tb, "the list to load", `window.todoReady === true`)
			browsertest.Eval[bool](t, tb, `window.sameDocument = true`)
			titles := `[...document.querySelectorAll('#todos li span')].map((s) => s.textContent).join(',')`
			if got := browsertest.Eval[string](t, tb, titles); got != "milk,bread,eggs" {
				t.Fatalf("the page shows %q", got)
			}

			r.Down()
			browsertest.WaitFor(t, tb, "the page to see the cut", `document.querySelector('#state').textContent === 'reconnecting…'`)
			app.act(t, `{"type":"todo.delete","topic":"todo.list","payload":{"id":2}}`)
			app.act(t, `{"type":"todo.add","topic":"todo.list","payload":{"title":"juice"}}`)
			app.act(t, `{"type":"todo.add","topic":"todo.list","payload":{"title":"tea"}}`)
			if got := browsertest.Eval[string](t, tb, titles); got != "milk,bread,eggs" {
				t.Fatalf("the page shows %q while cut off", got)
			}
			r.Up()

			browsertest.WaitFor(t, tb, "the list as it is now", titles+` === 'milk,eggs,juice,tea' && document.querySelector('#state').textContent === 'live'`)
			if !browsertest.Eval[bool](t, tb, `window.sameDocument === true && performance.getEntriesByType('navigation').length === 1`) {
				t.Error("the page was loaded again")
			}
			// The browser logs the stream's failed loads while the relay is
			// down: the cut's, not the page's errors.
			for _, e := range tb.Errors() {
				if !strings.Contains(e, "/v1/events?") || !strings.Contains(e, "net::ERR_") {
					t.Errorf("the page logged an error: %s", e)
				}
			}
		})
	}
}
