package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
)

// TestDashboardDeltas: the dashboard's live log comes from its WebSocket,
// which asks for deltas: a keyed topic changing one value per event shows
// each event's full data.
func TestDashboardDeltas(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(s.url+"/"))
	browsertest.WaitFor(t, tb, "the WebSocket subscription to open", `document.querySelector('#state-ws').classList.contains('open')`)
	if got := browsertest.Eval[string](t, tb, `document.querySelector('#transport').value`); got != "ws" {
		t.Errorf("the log shows events from %q, want ws", got)
	}
	want := publishBoards(t, s, 0, 8)
	browsertest.WaitFor(t, tb, "every event in the log", `document.querySelectorAll('#log li').length === 8`)
	got := browsertest.Eval[[]string](t, tb, `[...document.querySelectorAll('#log li')].reverse().map((li) => li.textContent.slice(li.textContent.indexOf('\n') + 1))`)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("log entry %d: %.80s…, want %.80s…", i, got[i], want[i])
		}
	}
	browsertest.NoErrors(t, tb)
}

// TestDashboardWire: the dashboard's WebSocket panel shows the bytes on
// the wire per event and the ratio deltas and compression achieve, from
// the connection's stats.
func TestDashboardWire(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(s.url+"/"))
	browsertest.WaitFor(t, tb, "the WebSocket subscription to open", `document.querySelector('#state-ws').classList.contains('open')`)
	publishBoards(t, s, 0, 8)
	browsertest.WaitFor(t, tb, "every event in the log", `document.querySelectorAll('#log li').length === 8`)
	browsertest.WaitFor(t, tb, "the WebSocket's stats", `document.querySelector('#ws-per-event').textContent !== '–' || document.querySelector('#ws-msg').textContent !== ''`)
	if msg := browsertest.Eval[string](t, tb, `document.querySelector('#ws-msg').textContent`); msg != "" {
		t.Fatalf("the dashboard could not read its connection's stats: %s", msg)
	}
	if got := browsertest.Eval[string](t, tb, `document.querySelector('#ws-events').textContent`); got != "8" {
		t.Errorf("events received %q, want 8", got)
	}
	// Eight events of about 3 KB, all but the first as deltas of tens of bytes.
	perEvent := browsertest.Eval[string](t, tb, `document.querySelector('#ws-per-event').textContent`)
	if !strings.HasSuffix(perEvent, " B") {
		t.Errorf("bytes on the wire per event %q, want under 1 KiB", perEvent)
	}
	ratio := browsertest.Eval[float64](t, tb, `parseFloat(document.querySelector('#ws-ratio').textContent)`)
	if ratio < 3 {
		t.Errorf("ratio %v, want at least 3", ratio)
	}
	browsertest.NoErrors(t, tb)
}
