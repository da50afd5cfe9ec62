package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestPeopleHere opens the page in two tabs, which each count two people
// here, and closes one: the other counts one within a second, on one node.
func TestPeopleHere(t *testing.T) {
	app := startTodo(t, heraldOptions{cors: true}, "milk")
	open := browsertest.New(t)
	tabs := []*browsertest.Tab{open(), open()}
	for _, tb := range tabs {
		tb.Do(t, chromedp.Navigate(app.page+"/"))
		browsertest.WaitFor(t, tb, "the list to load", `window.todoReady === true`)
	}
	people := `document.querySelector('#people').textContent`
	for _, tb := range tabs {
		browsertest.WaitFor(t, tb, "two people here", people+` === '2 people here'`)
	}

	tabs[1].Close(t)
	closed := time.Now()
	wait.For(t, time.Second, "one person here, within a second of the other tab closing", func() bool {
		return browsertest.Eval[string](t, tabs[0], people) == "1 person here"
	})
	t.Logf("the other tab counted one person %v after the close", time.Since(closed).Round(time.Millisecond))
	browsertest.NoErrors(t, tabs[0])
}
