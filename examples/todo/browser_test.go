package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestTwoTabs is the example's whole flow in a real browser: two tabs show
// the list; deleting an item in one removes it from both without any page
// load; a deletion the backend refuses shows its error; an item added in
// one tab appears in both; a third tab opened later shows the list as it
// is then.
func TestTwoTabs(t *testing.T) {
	app := startTodo(t, heraldOptions{cors: true}, "milk", "bread", "eggs")

	open := browsertest.New(t)
	tabs := []*browsertest.Tab{open(), open()}
	for _, tb := range tabs {
		tb.Do(t, chromedp.Navigate(app.page+"/"))
		browsertest.WaitFor(t, tb, "the list to load", `window.todoReady === true`)
		// A reload or a navigation would lose this.
		browsertest.Eval[bool](t, tb, `window.sameDocument = true`)
	}
	titles := func(tb *browsertest.Tab) string {
		return browsertest.Eval[string](t, tb, `[...document.querySelectorAll('#todos li span')].map((s) => s.textContent).join(',')`)
	}
	for i, tb := range tabs {
		if got := titles(tb); got != "milk,bread,eggs" {
			t.Fatalf("tab %d shows %q", i, got)
		}
	}

	tabs[0].Do(t, chromedp.Click(chromedp.CSS(`li[data-id="2"] button`)))
	for _, tb := range tabs {
		browsertest.WaitFor(t, tb, "bread to disappear", `!document.querySelector('li[data-id="2"]')`)
	}
	for i, tb := range tabs {
		if got := titles(tb); got != "milk,eggs" {
			t.Errorf("tab %d shows %q after the delete", i, got)
		}
	}

	// Deleting it again, as a tab that had not heard yet would: the backend
	// refuses, the promise rejects and the page says why.
	browsertest.Eval[bool](t, tabs[1], `removeTodo(2).then(() => true)`)
	browsertest.WaitFor(t, tabs[1], "the refusal to show", `document.querySelector('#error').textContent === 'Could not delete: not_found: there is no todo 2'`)

	tabs[1].Do(t,
		chromedp.SendKeys(chromedp.CSS("#title"), "juice"),
		chromedp.Click(chromedp.CSS("#add button")),
	)
	for _, tb := range tabs {
		browsertest.WaitFor(t, tb, "juice to appear", `[...document.querySelectorAll('#todos li span')].some((s) => s.textContent === 'juice')`)
	}

	// A tab opened now gets the list as it is from Herald's state.
	late := open()
	late.Do(t, chromedp.Navigate(app.page+"/"))
	browsertest.WaitFor(t, late, "the list to load", `window.todoReady === true`)
	if got := titles(late); got != "milk,eggs,juice" {
		t.Errorf("a tab opened later shows %q, want milk,eggs,juice", got)
	}
	browsertest.NoErrors(t, late)

	for i, tb := range tabs {
		if !browsertest.Eval[bool](t, tb, `window.sameDocument === true && performance.getEntriesByType('navigation').length === 1`) {
			t.Errorf("tab %d loaded a page again", i)
		}
		browsertest.NoErrors(t, tb)
	}
}

// TestPageWithoutCORS opens the page while Herald does not list its origin
// in --cors-origins, the mistake of starting Herald without that flag: the
// browser refuses herald.js, and the page says so in a banner that is
// visible above the list and names the flag to add.
func TestPageWithoutCORS(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk")
	heraldURL := app.herald

	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(app.page+"/"))
	browsertest.WaitFor(t, tb, "the error banner", `(() => {
		const el = document.querySelector('#fatal');
		const box = el.getBoundingClientRect();
		return !el.hidden && getComputedStyle(el).display !== 'none' && box.width > 0 && box.height > 0;
	})()`)
	text := browsertest.Eval[string](t, tb, `document.querySelector('#fatal').innerText`)
	for _, want := range []string{"Cannot load herald.js from Herald at " + heraldURL, "--cors-origins " + app.page} {
		if !strings.Contains(text, want) {
			t.Errorf("the banner says %q, want it to contain %q", text, want)
		}
	}
	if !browsertest.Eval[bool](t, tb, `(() => {
		const banner = document.querySelector('#fatal').getBoundingClientRect();
		return banner.bottom <= document.querySelector('#todos').getBoundingClientRect().top;
	})()`) {
		t.Error("the banner is not above the list")
	}
}

// TestCookieSession runs Herald as with --auth upstream --auth-upstream
// .../herald/auth: the page's own cookie session, which the browser sends
// to Herald on another port, is all it needs to see who is here and to
// delete and add to-dos. Without the session, an action is refused.
func TestCookieSession(t *testing.T) {
	app := startTodo(t, heraldOptions{cors: true, session: true}, "milk", "bread")
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(app.page+"/"))
	browsertest.WaitFor(t, tb, "the list to load", `window.todoReady === true`)

	// The page's presence stream carried the session: Herald knows the
	// member by the name the backend gave the session.
	wait.For(t, 10*time.Second, "the page's session in the presence", func() bool {
		resp, err := app.c.Get(app.herald + "/v1/topics/todo.list/presence")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"guest-`)
	})

	tb.Do(t, chromedp.Click(chromedp.CSS(`li[data-id="2"] button`)))
	browsertest.WaitFor(t, tb, "bread to disappear", `!document.querySelector('li[data-id="2"]')`)
	tb.Do(t,
		chromedp.SendKeys(chromedp.CSS("#title"), "juice"),
		chromedp.Click(chromedp.CSS("#add button")),
	)
	browsertest.WaitFor(t, tb, "juice to appear", `[...document.querySelectorAll('#todos li span')].some((s) => s.textContent === 'juice')`)
	browsertest.NoErrors(t, tb)

	if r := post(t, app.c, app.herald+"/v1/actions", `{"type":"todo.add","topic":"todo.list","payload":{"title":"x"}}`); r.status != http.StatusUnauthorized {
		t.Fatalf("an action without the session: %d %s, want 401", r.status, r.body)
	}
}
