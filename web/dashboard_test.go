package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
)

// TestDashboard loads the dashboard, as a user would, and checks that it
// connects over both transports without logging an error, shows an event
// published from its own form, runs an action that succeeds and one that
// fails, and shows the server's connection counts.
func TestDashboard(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(s.url+"/"))
	browsertest.WaitFor(t, tb, "the SSE subscription to open", `document.querySelector('#state-sse').classList.contains('open')`)
	browsertest.WaitFor(t, tb, "the WebSocket subscription to open", `document.querySelector('#state-ws').classList.contains('open')`)

	// An event published elsewhere shows up in the log.
	s.publish(t, "orders.42", "order.created", map[string]any{"total": 12.5})
	browsertest.WaitFor(t, tb, "the published event in the log", `[...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('orders.42') && li.textContent.includes('order.created') && li.textContent.includes('12.5'))`)

	// Publishing from the form.
	tb.Do(t,
		chromedp.SetValue(chromedp.CSS("#pub-topic"), "dash.form"),
		chromedp.SetValue(chromedp.CSS("#pub-type"), "note"),
		chromedp.SetValue(chromedp.CSS("#pub-data"), `{"text":"typed in the form"}`),
		chromedp.Click(chromedp.CSS("#pub-form button")),
	)
	browsertest.WaitFor(t, tb, "the form's event in the log", `[...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('dash.form') && li.textContent.includes('typed in the form'))`)
	browsertest.WaitFor(t, tb, "the form to show the event's cursor", `/^published as \S+-\d+$/.test(document.querySelector('#pub-msg').textContent)`)

	// An action that succeeds, then one that fails upstream.
	tb.Do(t,
		chromedp.SetValue(chromedp.CSS("#act-type"), "echo"),
		chromedp.SetValue(chromedp.CSS("#act-payload"), `{"item":"milk"}`),
		chromedp.Click(chromedp.CSS("#act-form button")),
	)
	browsertest.WaitFor(t, tb, "the echo action to succeed", `document.querySelector('#actions li.succeeded')?.textContent.includes('milk')`)
	tb.Do(t,
		chromedp.SetValue(chromedp.CSS("#act-type"), "shop.buy"),
		chromedp.Click(chromedp.CSS("#act-form button")),
	)
	browsertest.WaitFor(t, tb, "the failing action to show its failure", `document.querySelector('#actions li.failed')?.textContent.includes('out_of_stock: no milk left')`)

	// Server stats: at least the dashboard's own two connections.
	browsertest.WaitFor(t, tb, "the connection counts", `/^[1-9]\d* \/ [1-9]\d*$/.test(document.querySelector('#st-conns').textContent)`)
	browsertest.WaitFor(t, tb, "a point on the chart", `document.querySelectorAll('#chart polyline').length === 2`)

	// Pause holds events back; resume shows them.
	tb.Do(t, chromedp.Click(chromedp.CSS("#pause")))
	s.publish(t, "orders.43", "order.created", map[string]any{"total": 1})
	browsertest.WaitFor(t, tb, "the paused event to be held", `document.querySelector('#log-count').textContent === '1 held'`)
	if browsertest.Eval[bool](t, tb, `[...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('orders.43'))`) {
		t.Error("an event was shown while paused")
	}
	tb.Do(t, chromedp.Click(chromedp.CSS("#pause")))
	browsertest.WaitFor(t, tb, "the held event after resuming", `[...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('orders.43'))`)

	// The filter hides what does not match.
	tb.Do(t, chromedp.SendKeys(chromedp.CSS("#filter"), "dash.form"))
	browsertest.WaitFor(t, tb, "the filter to hide other events", `[...document.querySelectorAll('#log li')].every((li) => li.hidden !== li.textContent.includes('dash.form'))`)
	browsertest.NoErrors(t, tb)
}

// TestDashboardPresence watches a topic's members in the dashboard's
// presence panel while two pages join it, one over WebSocket with info and
// one over SSE, and the second tab closes: the panel follows each change
// without the dashboard being a member itself.
func TestDashboardPresence(t *testing.T) {
	s := newStack(t)
	open := browsertest.New(t)
	dash := open()
	dash.Do(t, chromedp.Navigate(s.url+"/"))
	dash.Do(t,
		chromedp.SetValue(chromedp.CSS("#pres-topic"), "room.7"),
		chromedp.Click(chromedp.CSS("#pres-form button")),
	)
	count := `document.querySelector('#pres-count').textContent`
	browsertest.WaitFor(t, dash, "an empty room", count+` === '0 members, 0 users'`)

	ann := open()
	openTestPage(t, ann, s.url)
	annID := browsertest.Eval[string](t, ann, `(async () => {
		window.room = herald.presence('room.7', { join: true, transport: 'ws', info: { name: 'Ann' } });
		await window.room.ready;
		return window.room.client;
	})()`)
	bob := open()
	openTestPage(t, bob, s.url)
	bobID := browsertest.Eval[string](t, bob, `(async () => {
		window.room = herald.presence('room.7', { join: true });
		await window.room.ready;
		return window.room.client;
	})()`)
	if annID == "" || bobID == "" || annID == bobID {
		t.Fatalf("client IDs %q and %q", annID, bobID)
	}
	member := func(id string) string {
		return `document.querySelector('#members li[data-client="` + id + `"]')?.textContent`
	}
	browsertest.WaitFor(t, dash, "both members", count+` === '2 members, 0 users'`)
	if got, want := browsertest.Eval[string](t, dash, member(annID)), annID+`  anonymous  {"name":"Ann"}`; got != want {
		t.Errorf("Ann's line: %q, want %q", got, want)
	}
	if got, want := browsertest.Eval[string](t, dash, member(bobID)), bobID+`  anonymous`; got != want {
		t.Errorf("Bob's line: %q, want %q", got, want)
	}

	bob.Close(t)
	browsertest.WaitFor(t, dash, "Bob to leave", count+` === '1 member, 0 users' && !`+member(bobID)+` && !!`+member(annID))
	browsertest.NoErrors(t, dash)
	browsertest.NoErrors(t, ann)
}
