package server_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/server"
)

// TestTLSBrowser loads the dashboard over HTTPS in Chromium, which does not
// know the test's certificate authority and is told to accept it. It checks
// that the page came over HTTP/2, that the dashboard's SSE and WebSocket
// subscriptions both open and get an event, and that the page holds more SSE
// streams open at once than the six connections per origin it would allow
// itself over HTTP/1.1.
func TestTLSBrowser(t *testing.T) {
	const extra = 10 // EventSources the test opens besides the dashboard's
	in, _, _ := startTLS(t, server.Config{})
	tb := browsertest.New(t, chromedp.Flag("ignore-certificate-errors", true))()
	tb.Do(t, chromedp.Navigate(in.URL+"/"))
	browsertest.WaitFor(t, tb, "the SSE subscription to open", `document.querySelector('#state-sse').classList.contains('open')`)
	browsertest.WaitFor(t, tb, "the WebSocket subscription to open", `document.querySelector('#state-ws').classList.contains('open')`)
	browsertest.WaitFor(t, tb, "the presence panel to be live", `document.querySelector('#pres-count').textContent !== ''`)
	if p := browsertest.Eval[string](t, tb, `performance.getEntriesByType('navigation')[0].nextHopProtocol`); p != "h2" {
		t.Errorf("the page came over %q, want h2", p)
	}

	browsertest.Eval[bool](t, tb, `(() => {
		window.streams = [];
		window.got = [];
		for (let i = 0; i < `+strconv.Itoa(extra)+`; i++) {
			const es = new EventSource('/v1/events?topic=tls.browser');
			es.onmessage = (e) => { window.got[i] = JSON.parse(e.data).data; };
			window.streams.push(es);
		}
		return true;
	})()`)
	browsertest.WaitFor(t, tb, "every EventSource to open", `window.streams.every((es) => es.readyState === EventSource.OPEN)`)
	// The dashboard's three: its SSE and WebSocket subscriptions and its
	// presence panel's watcher.
	if got := in.Clients(t); got != extra+3 {
		t.Errorf("the server counts %d clients, want %d: the dashboard's three and the test's", got, extra+3)
	}

	if status, body := in.Post(t, "/v1/publish", `{"topic":"tls.browser","data":"to the page"}`); status != http.StatusOK {
		t.Fatalf("publish: status %d, body %s", status, body)
	}
	browsertest.WaitFor(t, tb, "the event on every EventSource", `window.got.length === `+strconv.Itoa(extra)+` && window.got.every((d) => d === 'to the page')`)
	// The dashboard subscribes to > on both transports and counts what
	// each receives.
	browsertest.WaitFor(t, tb, "the event over the dashboard's SSE", `/open · 1$/.test(document.querySelector('#state-sse b').textContent)`)
	browsertest.WaitFor(t, tb, "the event over the dashboard's WebSocket", `/open · 1$/.test(document.querySelector('#state-ws b').textContent)`)
	browsertest.Eval[bool](t, tb, `(() => { window.streams.forEach((es) => es.close()); return true; })()`)
	browsertest.NoErrors(t, tb)
}
