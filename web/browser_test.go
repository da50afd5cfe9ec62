package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/wait"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
	"github.com/heraldpush/herald/web"
)

// The browser tests drive a real headless Chromium against a real Herald on
// 127.0.0.1. They need a Chromium (or Chrome) binary: .ci/run installs
// Debian's. Without one they are skipped, except under CI, where that fails.

// stack is a whole Herald: hub, actions, both transports and the HTTP API
// with the browser files, plus /test.html, a blank page that loads herald.js.
type stack struct {
	hub *hub.Hub
	srv *httptest.Server
	url string
}

const testPage = `<!doctype html><meta charset="utf-8"><title>herald.js test</title><link rel="icon" href="data:,">
<script type="module">
import * as herald from '/herald.js';
window.herald = herald;
window.heraldLoaded = true;
</script>`

func newStack(t *testing.T) *stack { return newStackCORS(t, nil) }

// newStackCORS is newStack with pages from these origins allowed, over
// HTTP (CORS) and WebSocket, as herald serve --cors-origins does.
func newStackCORS(t *testing.T, origins []string) *stack {
	t.Helper()
	h, err := hub.New(hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10000})})
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	svc, err := action.New(action.Options{Hub: h, Echo: true})
	if err != nil {
		t.Fatalf("action.New: %v", err)
	}
	svc.Handle("shop.buy", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		return nil, &action.Failure{Code: "out_of_stock", Message: "no milk left"}
	}))
	sseH := sse.New(sse.Options{Hub: h})
	wsH := ws.New(ws.Options{Hub: h, Actions: svc, AllowedOrigins: origins})
	router := httpapi.NewRouter(httpapi.Config{
		Hub: h, SSE: sseH, WS: wsH, Actions: svc,
		Client: web.JS(), Dashboard: web.Dashboard(), DashboardPaths: web.DashboardPaths,
		CORSOrigins: origins,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(testPage))
	})
	mux.Handle("/", router)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown()
		srv.Close()
		if err := sseH.Wait(ctx); err != nil {
			t.Errorf("sse Wait: %v", err)
		}
		if err := wsH.Wait(ctx); err != nil {
			t.Errorf("ws Wait: %v", err)
		}
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("actions Shutdown: %v", err)
		}
		if err := h.Close(ctx); err != nil {
			t.Errorf("hub Close: %v", err)
		}
	})
	return &stack{hub: h, srv: srv, url: srv.URL}
}

func (s *stack) publish(t *testing.T, topic, typ string, data any) {
	t.Helper()
	b, _ := json.Marshal(data)
	if _, err := s.hub.Publish(context.Background(), hub.Draft{Topic: topic, Type: typ, Data: b}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

var (
	browserOnce sync.Once
	browserPath string
)

// chromium finds the browser binary, or skips (fails under CI).
func chromium(t *testing.T) string {
	browserOnce.Do(func() {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
			if p, err := exec.LookPath(name); err == nil {
				browserPath = p
				return
			}
		}
	})
	if browserPath == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium found under CI: .ci/run installs Debian's chromium")
		}
		t.Skip("no Chromium found (apt-get install chromium); skipping the browser tests")
	}
	return browserPath
}

// tab is one browser tab with the errors its pages logged.
type tab struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string // console errors, uncaught exceptions, failed loads
}

func (tb *tab) errors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.errs...)
}

// newBrowser starts a headless Chromium for the test and returns a
// function that opens a tab. Everything ends with the test.
func newBrowser(t *testing.T) func() *tab {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("failed to start Chromium: %v", err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	return func() *tab {
		tctx, cancel := chromedp.NewContext(bctx)
		tb := &tab{ctx: tctx}
		// Console subscribes at once; the goroutine ends with the tab.
		msgs := chromedp.Console(tctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m, err := range msgs {
				if err != nil {
					return
				}
				if m.Type == chromedp.ConsoleError || m.IsException() {
					tb.mu.Lock()
					tb.errs = append(tb.errs, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
					tb.mu.Unlock()
				}
			}
		}()
		if err := chromedp.Do(tctx); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("failed to open a tab: %v", err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				screenshot(t, tb)
			}
			cancel()
			wg.Wait()
		})
		return tb
	}
}

// screenshot saves the tab as a PNG and names the file in the test log.
func screenshot(t *testing.T, tb *tab) {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Logf("no screenshot: %v", err)
		return
	}
	dir := os.Getenv("HERALD_SCREENSHOTS")
	if dir == "" {
		dir = os.TempDir()
	}
	name := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".png")
	if err := os.WriteFile(name, buf, 0o644); err != nil {
		t.Logf("no screenshot: %v", err)
		return
	}
	t.Logf("screenshot of the failing page: %s", name)
}

// do runs actions in the tab with a deadline.
func (tb *tab) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the tab, awaiting a promise,
// and decodes its value.
func eval[T any](t *testing.T, tb *tab, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: evaluating %.80q: %v", expr, err)
	}
	return v
}

// openTestPage loads /test.html from base and waits for herald.js.
func (tb *tab) openTestPage(t *testing.T, base string) {
	t.Helper()
	tb.do(t, chromedp.Navigate(base+"/test.html"))
	waitFor(t, tb, "herald.js to load", "window.heraldLoaded === true")
}

// waitFor polls a boolean JavaScript expression until it holds.
func waitFor(t *testing.T, tb *tab, what, expr string) {
	t.Helper()
	wait.For(t, 20*time.Second, what, func() bool { return eval[bool](t, tb, "!!("+expr+")") })
}

func noErrors(t *testing.T, tb *tab) {
	t.Helper()
	if errs := tb.errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
