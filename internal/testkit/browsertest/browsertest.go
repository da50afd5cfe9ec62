// Package browsertest drives a real headless Chromium for tests, through
// chromedp: it finds the browser, opens tabs that record console errors and
// uncaught exceptions, evaluates JavaScript and polls for conditions.
//
// A test that needs a browser skips without one, except under CI (the CI
// variable set), where that fails: .ci/run installs Debian's chromium.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

var (
	browserOnce sync.Once
	browserPath string
)

// chromium finds the browser binary, or skips (fails under CI).
func chromium(t testing.TB) string {
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

// Tab is one browser tab with the errors its pages logged. Its methods
// are for the test goroutine; Errors may be called from any.
type Tab struct {
	Ctx  context.Context
	mu   sync.Mutex
	errs []string // console errors, uncaught exceptions, failed loads
}

func (tb *Tab) Errors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.errs...)
}

// New starts a headless Chromium for the test and returns a function that
// opens a tab. Everything ends with the test; a failed test leaves a
// screenshot of each of its tabs (see screenshot). extra adds to the
// browser's options, e.g. chromedp.Flag("ignore-certificate-errors", true)
// for a server with a self-signed certificate.
func New(t *testing.T, extra ...chromedp.ExecAllocatorOption) func() *Tab {
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
	opts = append(opts, extra...)
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
	return func() *Tab {
		tctx, cancel := chromedp.NewContext(bctx)
		tb := &Tab{Ctx: tctx}
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

// Close closes the tab, as a user closing it does, and returns once the
// browser has closed it. The tab's pages are gone; its errors stay.
func (tb *Tab) Close(t *testing.T) {
	t.Helper()
	if err := chromedp.Cancel(tb.Ctx); err != nil {
		t.Fatalf("failed to close the tab: %v", err)
	}
}

// screenshot saves the tab as a PNG and names the file in the test log.
func screenshot(t *testing.T, tb *Tab) {
	if tb.Ctx.Err() != nil {
		return // closed
	}
	ctx, cancel := context.WithTimeout(tb.Ctx, 10*time.Second)
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

// Do runs actions in the tab with a deadline, failing the test on error.
func (tb *Tab) Do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.Ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression in the tab, awaiting a promise,
// and decodes its value.
func Eval[T any](t *testing.T, tb *Tab, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.Ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: evaluating %.80q: %v", expr, err)
	}
	return v
}

// WaitFor polls a boolean JavaScript expression until it holds.
func WaitFor(t *testing.T, tb *Tab, what, expr string) {
	t.Helper()
	wait.For(t, 20*time.Second, what, func() bool { return Eval[bool](t, tb, "!!("+expr+")") })
}

func NoErrors(t *testing.T, tb *Tab) {
	t.Helper()
	if errs := tb.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
