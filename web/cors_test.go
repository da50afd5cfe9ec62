package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
)

// TestCrossOriginPage serves a page from one origin that loads herald.js
// from a Herald on another, as a dashboard hosted elsewhere would. With the
// page's origin allowed it subscribes over both transports, publishes and
// runs an action; without, the browser refuses to load the module.
func TestCrossOriginPage(t *testing.T) {
	var heraldURL atomic.Value // string: the Herald the page loads from
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>elsewhere</title>
<script type="module">
window.loaded = import(%q).then((h) => { h.configure({ baseURL: %q }); window.herald = h; return 'ok'; },
                                 (e) => 'failed: ' + e.message);
</script>`, heraldURL.Load().(string)+"/herald.js", heraldURL.Load().(string))
	}))
	t.Cleanup(pages.Close)

	t.Run("allowed", func(t *testing.T) {
		s := newStackCORS(t, []string{pages.URL})
		heraldURL.Store(s.url)
		tb := browsertest.New(t)()
		tb.Do(t, chromedp.Navigate(pages.URL+"/"))
		if got := browsertest.Eval[string](t, tb, `window.loaded`); got != "ok" {
			t.Fatalf("loading herald.js across origins: %s", got)
		}
		got := browsertest.Eval[string](t, tb, `(async () => {
			const seen = { sse: [], ws: [] };
			const subs = ['sse', 'ws'].map((tr) => herald.subscribe(['x.*'], (e) => seen[tr].push(e.data.n), { transport: tr }));
			await Promise.all(subs.map((s) => s.ready));
			await herald.publish('x.a', 'n', { n: 1 });
			while (seen.sse.length === 0 || seen.ws.length === 0) await new Promise((r) => setTimeout(r, 10));
			const ev = await herald.action('echo', 'x.results', { n: 2 });
			subs.forEach((s) => s.close());
			return [seen.sse[0], seen.ws[0], ev.data.result.n].join(',');
		})()`)
		if got != "1,1,2" {
			t.Errorf("cross-origin subscribe, publish and action: %q, want 1,1,2", got)
		}
		browsertest.NoErrors(t, tb)
	})

	t.Run("not allowed", func(t *testing.T) {
		s := newStack(t)
		heraldURL.Store(s.url)
		tb := browsertest.New(t)()
		tb.Do(t, chromedp.Navigate(pages.URL+"/"))
		if got := browsertest.Eval[string](t, tb, `window.loaded`); !strings.HasPrefix(got, "failed: ") {
			t.Errorf("a page from an origin not allowed loaded herald.js: %s", got)
		}
	})
}
