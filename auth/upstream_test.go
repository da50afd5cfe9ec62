package auth_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/authapp"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// upstreamAuth is an Authenticator that asks app, with cfg's other
// settings, closed when the test ends.
func upstreamAuth(t *testing.T, app *authapp.App, timeout time.Duration, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	u, err := auth.NewUpstream(auth.UpstreamOptions{URL: app.URL, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	cfg.Upstream = u
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sessionRequest(sid string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://herald.test/v1/events?topic=chat.x", nil)
	if sid != "" {
		r.AddCookie(&http.Cookie{Name: "sid", Value: sid})
	}
	return r
}

func mustPattern(t *testing.T, s string) hub.Pattern {
	t.Helper()
	p, err := hub.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUpstreamGrants(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{PublicSubscribe: []hub.Pattern{mustPattern(t, "news.>")}})

	before := time.Now()
	p, err := a.Request(sessionRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "alice" || !p.Upstream() || p.Anonymous() {
		t.Fatalf("principal %+v: want alice, granted by the application", p)
	}
	if !p.MaySubscribe(mustPattern(t, "chat.room")) || !p.MaySubscribe(mustPattern(t, "news.x")) ||
		p.MaySubscribe(mustPattern(t, "admin.x")) {
		t.Fatal("want subscribe to chat.* and the public news.>, nothing else")
	}
	if !p.MayPublish("chat.room") || p.MayPublish("news.x") || !p.MayAct("echo") || p.MayAct("todo.add") {
		t.Fatal("want publish chat.* and the echo action only")
	}
	if _, info := p.Member(); string(info) != `{"name":"Alice"}` {
		t.Fatalf("info %s", info)
	}
	if d := p.Expires.Sub(before); d < 299*time.Second || d > 302*time.Second {
		t.Fatalf("expires in %v, want the answer's 300 s", d)
	}
	calls := app.Calls(t)
	if len(calls) != 1 || calls[0].Cookie != "sid=alice" || calls[0].Authorization != "" {
		t.Fatalf("calls %+v: want one with the session cookie", calls)
	}
	if got := string(calls[0].Body); !strings.Contains(got, `"transport":"sse"`) || !strings.Contains(got, `"path":"/v1/events"`) {
		t.Fatalf("the application was told %s", got)
	}

	// Without cookies or Authorization the application is not asked: the
	// request is anonymous.
	p, err = a.Request(sessionRequest(""))
	if err != nil || !p.Anonymous() || !p.MaySubscribe(mustPattern(t, "news.x")) || p.MaySubscribe(mustPattern(t, "chat.x")) {
		t.Fatalf("no credentials: %+v, %v; want anonymous with the public patterns", p, err)
	}
	if n := len(app.Calls(t)); n != 1 {
		t.Fatalf("%d calls, want still 1", n)
	}
	if w := p.Wanted(); w != "a session the application accepts (its cookies or Authorization)" {
		t.Fatalf("an anonymous request is told it lacks %q", w)
	}
}

func TestUpstreamRefusals(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{})

	// 403: a user who may do nothing.
	p, err := a.Request(sessionRequest("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Anonymous() || p.MaySubscribe(mustPattern(t, "chat.x")) || p.MayPublish("chat.x") || p.MayAct("echo") {
		t.Fatalf("403: %+v, want a principal that may do nothing, not anonymous", p)
	}
	// 401: refused.
	if _, err := a.Request(sessionRequest("mallory")); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("401: %v, want ErrUnauthorized", err)
	}
	// Refusals are kept for a moment: asking again costs no call.
	a.Request(sessionRequest("mallory"))
	a.Request(sessionRequest("nobody"))
	if n := len(app.Calls(t)); n != 2 {
		t.Fatalf("%d calls, want 2 (refusals are cached)", n)
	}
}

// Whatever goes wrong with the application, no request gets through.
func TestUpstreamFailsClosed(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{})
	for _, mode := range []string{"error", "garbage"} {
		app.SetMode(t, mode)
		_, err := a.Request(sessionRequest("alice"))
		var ue *auth.UnavailableError
		if !errors.As(err, &ue) || ue.RetryAfter <= 0 {
			t.Fatalf("mode %s: %v, want an UnavailableError with a Retry-After", mode, err)
		}
	}
	// A failure is not cached: once the application answers, so does Herald.
	app.SetMode(t, "grant")
	if p, err := a.Request(sessionRequest("alice")); err != nil || p.Subject != "alice" {
		t.Fatalf("after recovery: %v %v", p, err)
	}
	// Down: refused at once, not after the timeout.
	app.Stop()
	start := time.Now()
	if _, err := a.Request(sessionRequest("bob")); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("application down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refused after %v", d)
	}
}

// A slow application refuses its session within the timeout, and the
// requests of another session are answered meanwhile.
func TestUpstreamSlowSessionBlocksNoOther(t *testing.T) {
	app := authapp.Start(t, 300)
	const timeout = 3 * time.Second
	a := upstreamAuth(t, app, timeout, auth.Config{})

	slow := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := a.Request(sessionRequest("slow"))
		slow <- err
	}()
	// The slow call is under way when alice asks.
	waitCalls(t, app, 1)
	aliceStart := time.Now()
	p, err := a.Request(sessionRequest("alice"))
	if err != nil || p.Subject != "alice" {
		t.Fatalf("alice: %v %v", p, err)
	}
	if d := time.Since(aliceStart); d > timeout/2 {
		t.Fatalf("alice waited %v for the slow session", d)
	}
	select {
	case err := <-slow:
		if !errors.Is(err, auth.ErrUnavailable) {
			t.Fatalf("slow: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d < timeout-100*time.Millisecond || d > timeout+time.Second {
			t.Fatalf("slow refused after %v, want about the timeout %v", d, timeout)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("the slow session's request did not end")
	}
}

// Concurrent requests of one session make one call; the answer is then
// kept for its expires_in.
func TestUpstreamCoalescesAndCaches(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			if p, err := a.Request(sessionRequest("alice")); err != nil || p.Subject != "alice" {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a request was refused: %v", err)
	}
	for range 50 {
		a.Request(sessionRequest("alice"))
	}
	if n := len(app.Calls(t)); n != 1 {
		t.Fatalf("%d calls for 100 requests of one session, want 1", n)
	}
}

// Many requests of many sessions at once, each session's first requests
// arriving together and its later ones while or just after its call
// ends: one call per session, not one more for a request that missed the
// cache just before the answer was put in it.
func TestUpstreamOneCallPerSession(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 5*time.Second, auth.Config{})
	const sessions, workers = 300, 32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Every worker walks the sessions in one order, each a step
			// behind the one before: a session's requests come in a burst.
			for i := range sessions + w {
				if _, err := a.Request(sessionRequest(fmt.Sprintf("user-%d", i%sessions))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(app.Calls(t)); n != sessions {
		t.Fatalf("%d calls for %d sessions, want one each", n, sessions)
	}
}

// Cookies of a page of another origin are never sent to the application:
// the request is anonymous, and says why.
func TestUpstreamCrossOriginCookies(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{CookieOrigins: []string{"https://app.example", "https://*.example"}})

	for _, origin := range []string{"https://evil.example", "https://sub.example", "null"} {
		r := sessionRequest("alice")
		r.Header.Set("Origin", origin)
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		p, err := a.Request(r)
		if err != nil || !p.Anonymous() || !p.CookieIgnored() {
			t.Fatalf("origin %s: %+v %v, want anonymous, cookie ignored", origin, p, err)
		}
	}
	if calls := app.Calls(t); len(calls) != 0 {
		t.Fatalf("the application got %+v from foreign pages", calls)
	}
	r := sessionRequest("alice")
	r.Header.Set("Origin", "https://app.example")
	r.Header.Set("Sec-Fetch-Site", "same-site")
	if p, err := a.Request(r); err != nil || p.Subject != "alice" {
		t.Fatalf("named origin: %+v %v, want alice", p, err)
	}
}

// With token verification as well, a Herald token is verified and the
// application is not asked; another Authorization scheme goes to it.
func TestUpstreamWithTokens(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{Secret: secret})

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "carol", "exp": time.Now().Add(time.Hour).Unix(),
		"herald": map[string]any{"subscribe": []string{"x.*"}},
	}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := sessionRequest("alice")
	r.Header.Set("Authorization", "Bearer "+tok)
	if p, err := a.Request(r); err != nil || p.Subject != "carol" || p.Upstream() {
		t.Fatalf("token: %+v %v, want carol from the token", p, err)
	}
	r = sessionRequest("")
	r.Header.Set("Authorization", "App bob")
	if p, err := a.Request(r); err != nil || p.Subject != "bob" {
		t.Fatalf("App scheme: %+v %v, want bob from the application", p, err)
	}
	calls := app.Calls(t)
	if len(calls) != 1 || calls[0].Authorization != "App bob" || calls[0].Cookie != "" {
		t.Fatalf("calls %+v, want the App one only", calls)
	}
	if p, _ := a.Request(sessionRequest("")); !strings.HasPrefix(p.Wanted(), "a token or a session") {
		t.Fatalf("an anonymous request is told it lacks %q", p.Wanted())
	}
}

// Without token verification every Authorization is the application's,
// and access_token is refused rather than ignored.
func TestUpstreamOnly(t *testing.T) {
	app := authapp.Start(t, 300)
	a := upstreamAuth(t, app, 2*time.Second, auth.Config{})
	r := sessionRequest("")
	r.Header.Set("Authorization", "Bearer whatever")
	if _, err := a.Request(r); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("%v: want the application's 401", err)
	}
	if calls := app.Calls(t); len(calls) != 1 || calls[0].Authorization != "Bearer whatever" {
		t.Fatalf("calls %+v", calls)
	}
	r = httptest.NewRequest(http.MethodGet, "http://herald.test/v1/events?topic=x&access_token=abc", nil)
	if _, err := a.Request(r); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("access_token: %v, want ErrUnauthorized", err)
	}
	if _, err := a.Token("abc"); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("Token: %v", err)
	}
}

func waitCalls(t *testing.T, app *authapp.App, n int) {
	t.Helper()
	wait.For(t, 10*time.Second, "the application's calls", func() bool { return len(app.Calls(t)) >= n })
}

// A failed call is logged, without the cookies or the Authorization that
// were forwarded.
func TestUpstreamLogsNoSecrets(t *testing.T) {
	app := authapp.Start(t, 300)
	app.SetMode(t, "error")
	var logs heraldtest.Log
	u, err := auth.NewUpstream(auth.UpstreamOptions{URL: app.URL, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	a, err := auth.New(auth.Config{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	r := sessionRequest("cookie-secret-1")
	r.Header.Set("Authorization", "App header-secret-2")
	if _, err := a.Request(r); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("%v, want ErrUnavailable", err)
	}
	if calls := app.Calls(t); len(calls) != 1 || !strings.Contains(calls[0].Cookie, "cookie-secret-1") {
		t.Fatalf("calls %+v", calls)
	}
	got := logs.String()
	if !strings.Contains(got, "failed to ask the auth upstream") || !strings.Contains(got, "500") {
		t.Fatalf("log %q: want the failure, with the status", got)
	}
	if strings.Contains(got, "secret") {
		t.Fatalf("the log has a forwarded secret: %q", got)
	}
}
