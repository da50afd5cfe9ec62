package main

import (
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/browsertest"
)

// TestTwoTabs is the example's whole flow in a real browser: two tabs show
// the list; deleting an item in one removes it from both without any page
// load; a deletion the backend refuses shows its error; an item added in
// one tab appears in both.
func TestTwoTabs(t *testing.T) {
	b := newBackend(slog.New(slog.DiscardHandler))
	b.seed("milk", "bread", "eggs")
	page := httptest.NewServer(b)
	t.Cleanup(page.Close)
	b.setHerald(startHerald(t, page.URL+"/actions", []string{page.URL}))

	open := browsertest.New(t)
	tabs := []*browsertest.Tab{open(), open()}
	for _, tb := range tabs {
		tb.Do(t, chromedp.Navigate(page.URL+"/"))
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

	for i, tb := range tabs {
		if !browsertest.Eval[bool](t, tb, `window.sameDocument === true && performance.getEntriesByType('navigation').length === 1`) {
			t.Errorf("tab %d loaded a page again", i)
		}
		browsertest.NoErrors(t, tb)
	}
}
