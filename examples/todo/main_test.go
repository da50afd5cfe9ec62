package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type reply struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, c *http.Client, url, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

// todoApp is the example running against a database of its own and an
// in-process Herald that consumes the database's outbox.
type todoApp struct {
	b      *backend
	page   string // the backend's URL: the page, and /actions
	herald string // Herald's URL
	node   *heraldtest.Node
	cfg    server.Config // Herald's configuration, to start another
	db     string        // the database's URL
	pool   *pgxpool.Pool
	api    *heraldAPI
	c      *http.Client
}

// heraldOptions are how startTodo runs Herald.
type heraldOptions struct {
	cors    bool // --cors-origins lists the page's origin
	history int  // events retained; 0: the default
	// session: Herald asks the backend's /herald/auth what the page's
	// cookie session may do (--auth upstream --public-subscribe todo.list).
	session bool
}

// startTodo sets up a database of the test's own with the seed to-dos, as
// the command does on start, runs the backend on it, and a Herald as
// herald serve would with --source (the database's outbox),
// --action-upstream (the backend, for the todo. types) and, as o says,
// --cors-origins, --history-size and --auth upstream. It returns once
// Herald's copy of the list holds the seed.
func startTodo(t *testing.T, o heraldOptions, seed ...string) *todoApp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	db := pgtest.Database(t)
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := setup(ctx, db, pool, seed...); err != nil {
		t.Fatalf("setup: %v", err)
	}
	b := newBackend(slog.New(slog.DiscardHandler), pool)
	srv := httptest.NewServer(b)
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	cfg := server.Config{
		Sources:         []string{db + "&table=herald_outbox"},
		ActionUpstreams: []server.Upstream{{Type: "todo.", URL: srv.URL + "/actions"}},
		HistorySize:     o.history,
	}
	if o.cors {
		// As herald serve does, the origins of --cors-origins may open
		// WebSockets too.
		cfg.CORSOrigins, cfg.AllowedOrigins = []string{srv.URL}, []string{srv.URL}
	}
	if o.session {
		public, _ := hub.ParsePattern(topic)
		cfg.Auth, cfg.AuthUpstream, cfg.PublicSubscribe = "upstream", srv.URL+"/herald/auth", []hub.Pattern{public}
	}
	n := heraldtest.Start(t, cfg)
	api := newHeraldAPI(n.URL)
	t.Cleanup(api.client.CloseIdleConnections)
	b.setHerald(n.URL, api)
	app := &todoApp{b: b, page: srv.URL, herald: n.URL, node: n, cfg: cfg, db: db, pool: pool, api: api,
		c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	var want []string
	for i, title := range seed {
		want = append(want, todoJSON(i+1, title))
	}
	app.waitState(t, "the seed", want...)
	app.waitOutbox(t)
	return app
}

// waitOutbox waits until Herald has consumed the outbox: its copy of the
// list then has every change committed so far.
func (a *todoApp) waitOutbox(t *testing.T) {
	t.Helper()
	wait.For(t, 10*time.Second, "the outbox to be consumed", func() bool {
		var n int
		err := a.pool.QueryRow(context.Background(), "SELECT count(*) FROM herald_outbox").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// todoJSON is a state entry as todoApp.state shows it.
func todoJSON(id int, title string) string {
	b, _ := json.Marshal(todo{ID: int64(id), Title: title})
	return key(int64(id)) + "=" + string(b)
}

// state is Herald's copy of the list, as "key=data" sorted by key.
func (a *todoApp) state(t *testing.T) string {
	t.Helper()
	st, err := a.api.state(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, v := range st {
		out = append(out, k+"="+string(v))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// waitState waits until Herald's copy of the list is want (todoJSON's).
func (a *todoApp) waitState(t *testing.T, what string, want ...string) {
	t.Helper()
	slices.Sort(want)
	w := strings.Join(want, " ")
	var got string
	wait.For(t, 10*time.Second, "Herald's copy of the list to be "+what+": "+w, func() bool {
		got = a.state(t)
		return got == w
	})
}

// titles is the list in the database, as "id:title" in ID order.
func (a *todoApp) titles(t *testing.T) string {
	t.Helper()
	rows, err := a.pool.Query(context.Background(), "SELECT id || ':' || title FROM todo_items ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, ",")
}

// exec runs SQL on the app's database.
func (a *todoApp) exec(t *testing.T, sql string) {
	t.Helper()
	if _, err := a.pool.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// publish publishes an event straight to Herald, past the outbox, as
// another publisher could: it makes Herald's copy wrong.
func (a *todoApp) publish(t *testing.T, key, data string) {
	t.Helper()
	r := post(t, a.c, a.herald+"/v1/publish", `{"topic":"todo.list","type":"todo","key":"`+key+`","data":`+data+`}`)
	if r.status/100 != 2 {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
}

// errorCode is the code of a SPEC error body, or "".
func errorCode(body string) string {
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

// TestBackendReplaysByKey calls the backend as Herald does when it retries:
// the same Idempotency-Key gets the same answer and adds nothing.
func TestBackendReplaysByKey(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	url, c := app.page+"/actions", app.c
	add := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"milk"},"attempt":1}`
	for attempt := range 2 {
		r := post(t, c, url, add, "Idempotency-Key", "k1")
		if r.status != http.StatusOK || r.body != `{"id":1,"title":"milk"}` {
			t.Fatalf("attempt %d: %d %s, want 200 {\"id\":1,\"title\":\"milk\"}", attempt+1, r.status, r.body)
		}
	}
	if r := post(t, c, url, add, "Idempotency-Key", "k2"); r.body != `{"id":2,"title":"milk"}` {
		t.Errorf("another key: %s, want a second todo", r.body)
	}
	if got := app.titles(t); got != "1:milk,2:milk" {
		t.Errorf("the table holds %s, want 1:milk,2:milk", got)
	}

	for _, tc := range []struct{ body, code string }{
		{`{"type":"todo.fail","payload":null}`, "refused"},
		{`{"type":"todo.add","payload":{}}`, "invalid_title"},
		{`{"type":"todo.add","payload":{"title":"` + strings.Repeat("x", maxTitle+1) + `"}}`, "invalid_title"},
		{`{"type":"todo.delete","payload":{"id":42}}`, "not_found"},
		{`{"type":"todo.delete","payload":{"id":"1"}}`, "invalid_id"},
		{`{"type":"todo.rename","payload":{}}`, "unknown_type"},
	} {
		for range 2 { // the second time replayed
			r := post(t, c, url, tc.body, "Idempotency-Key", tc.body[:min(len(tc.body), 60)])
			if r.status != http.StatusUnprocessableEntity || errorCode(r.body) != tc.code {
				t.Errorf("%.60s: %d %s, want 422 with code %s", tc.body, r.status, r.body, tc.code)
			}
		}
	}
	if r := post(t, c, url, `not json`); r.status != http.StatusBadRequest {
		t.Errorf("a body that is not JSON: %d %s, want 400", r.status, r.body)
	}
	app.waitState(t, "both", todoJSON(1, "milk"), todoJSON(2, "milk"))
	if got := app.titles(t); got != "1:milk,2:milk" {
		t.Errorf("after refused actions the table holds %s, want 1:milk,2:milk", got)
	}
}

// TestConcurrentAttempts sends 8 attempts with one Idempotency-Key at
// once, as a Herald whose attempt timed out while the first still ran
// might: they run one after the other, and all but the first replay it.
func TestConcurrentAttempts(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	add := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"milk"},"attempt":1}`
	answers := make(chan reply, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, app.page+"/actions", strings.NewReader(add))
			req.Header.Set("Idempotency-Key", "same")
			resp, err := app.c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- reply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
		}()
	}
	wg.Wait()
	close(answers)
	for r := range answers {
		if r.status != http.StatusOK || r.body != `{"id":1,"title":"milk"}` {
			t.Errorf("an attempt: %d %s, want 200 with to-do 1", r.status, r.body)
		}
	}
	if got := app.titles(t); got != "1:milk" {
		t.Errorf("the table holds %s, want 1:milk once", got)
	}
	app.waitState(t, "milk once", todoJSON(1, "milk"))
}

// TestWithHerald follows the flow a browser sees, with Herald consuming
// the outbox: submit over HTTP, receive the change and the result over
// SSE. The change's event comes from the outbox and the result from
// Herald's action service, so either may come first.
func TestWithHerald(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	heraldURL, c := app.herald, app.c
	lines, stop := heraldtest.StreamLinesVia(context.Background(), t, c, heraldURL+"/v1/events?topic=todo.*", "")
	t.Cleanup(stop)

	submit := func(body string, header ...string) string {
		t.Helper()
		r := post(t, c, heraldURL+"/v1/actions", body, header...)
		var a struct{ ID string }
		if r.status != http.StatusAccepted || json.Unmarshal([]byte(r.body), &a) != nil {
			t.Fatalf("submit %s: %d %s", body, r.status, r.body)
		}
		return a.ID
	}
	// expect reads len(want) events, each "type key data", in any order.
	expect := func(want ...string) {
		t.Helper()
		var got []string
		for range want {
			var e struct {
				Topic, Type, Key string
				Data             json.RawMessage
			}
			line := heraldtest.NextLine(t, lines, "data: ")
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e); err != nil || e.Topic != topic {
				t.Fatalf("event %s: %v", line, err)
			}
			got = append(got, e.Type+" "+e.Key+" "+string(e.Data))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	id := submit(`{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`, "Idempotency-Key", "add-milk")
	expect(`todo 1 {"id":1,"title":"milk"}`,
		`action.succeeded  {"action_id":"`+id+`","type":"todo.add","status":"succeeded","result":{"id":1,"title":"milk"}}`)

	// Repeating the request with its key names the same action; the
	// backend is not called again.
	r := post(t, c, heraldURL+"/v1/actions", `{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`,
		"Idempotency-Key", "add-milk")
	if r.status != http.StatusOK || r.header.Get("Location") != "/v1/actions/"+id || !strings.Contains(r.body, `"status":"succeeded"`) {
		t.Errorf("repeat: %d %s %s, want 200 with the first action's status", r.status, r.header.Get("Location"), r.body)
	}

	id = submit(`{"type":"todo.delete","topic":"todo.list","payload":{"id":1}}`)
	expect(`todo 1 null`,
		`action.succeeded  {"action_id":"`+id+`","type":"todo.delete","status":"succeeded","result":{"deleted":1}}`)

	// A refusal changes nothing: its result is the only event.
	id = submit(`{"type":"todo.fail","topic":"todo.list","payload":{}}`)
	expect(`action.failed  {"action_id":"` + id + `","type":"todo.fail","status":"failed","error":{"code":"refused","message":"todo.fail always fails: this is how a backend refuses an action"}}`)
	id = submit(`{"type":"todo.delete","topic":"todo.list","payload":{"id":1}}`)
	expect(`action.failed  {"action_id":"` + id + `","type":"todo.delete","status":"failed","error":{"code":"not_found","message":"there is no todo 1"}}`)

	if got := app.titles(t); got != "" {
		t.Errorf("the table holds %s after one add and its delete, want nothing", got)
	}
	if got := app.state(t); got != "" {
		t.Errorf("Herald's copy of the list: %s, want it empty", got)
	}
}

// TestRolledBack makes the database refuse an add's event after its
// to-do was inserted: the transaction rolls back, so neither the to-do
// nor its event exists, and the backend answers 503 for Herald to try
// again. The retry, once the database accepts it, adds the to-do once.
func TestRolledBack(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	lines, stop := heraldtest.StreamLinesVia(context.Background(), t, app.c, app.herald+"/v1/events?topic=todo.list", "")
	t.Cleanup(stop)
	app.exec(t, `ALTER TABLE herald_outbox ADD CONSTRAINT no_tea CHECK (data->>'title' IS DISTINCT FROM 'tea')`)

	url := app.page + "/actions"
	tea := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"tea"},"attempt":1}`
	for range 2 {
		if r := post(t, app.c, url, tea, "Idempotency-Key", "add-tea"); r.status != http.StatusServiceUnavailable || errorCode(r.body) != "unavailable" {
			t.Fatalf("an add whose event the database refuses: %d %s, want 503 unavailable", r.status, r.body)
		}
	}
	if got := app.titles(t); got != "" {
		t.Fatalf("after the rolled-back add the table holds %s", got)
	}
	milk := `{"id":"act_2","type":"todo.add","topic":"todo.list","payload":{"title":"milk"},"attempt":1}`
	r := post(t, app.c, url, milk, "Idempotency-Key", "add-milk")
	var m todo
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &m) != nil {
		t.Fatalf("add milk: %d %s", r.status, r.body)
	}
	// The first event the subscriber gets is milk's: tea's never was.
	if got, want := heraldtest.NextLine(t, lines, "data: "), `"key":"`+key(m.ID)+`","data":{"id":`+key(m.ID)+`,"title":"milk"}`; !strings.Contains(got, want) {
		t.Fatalf("the first event: %s, want milk's (%s)", got, want)
	}

	app.exec(t, `ALTER TABLE herald_outbox DROP CONSTRAINT no_tea`)
	for attempt := range 2 {
		r := post(t, app.c, url, tea, "Idempotency-Key", "add-tea")
		if r.status != http.StatusOK || !strings.Contains(r.body, `"title":"tea"`) {
			t.Fatalf("retry %d: %d %s, want 200 with tea", attempt+1, r.status, r.body)
		}
	}
	if got := heraldtest.NextLine(t, lines, "data: "); !strings.Contains(got, `"title":"tea"`) {
		t.Fatalf("the next event: %s, want tea's", got)
	}
	if got := app.titles(t); strings.Count(got, ":tea") != 1 {
		t.Errorf("the table holds %s, want tea once", got)
	}
}

// TestDatabaseUnreachable runs actions while the backend cannot reach
// PostgreSQL (through a relay that is down): each answers 503 within its
// timeout, for Herald to try again, and changes nothing; once PostgreSQL
// is back, the retried action applies once.
func TestDatabaseUnreachable(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk")
	via, r := pgtest.Relayed(t, app.db)
	pool, err := pgxpool.New(context.Background(), via+"&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := httptest.NewServer(newBackend(slog.New(slog.DiscardHandler), pool))
	t.Cleanup(srv.Close)

	r.Down()
	add := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"tea"},"attempt":1}`
	del := `{"id":"act_2","type":"todo.delete","topic":"todo.list","payload":{"id":1},"attempt":1}`
	for _, body := range []string{add, del} {
		start := time.Now()
		r := post(t, app.c, srv.URL+"/actions", body, "Idempotency-Key", body)
		if r.status != http.StatusServiceUnavailable || errorCode(r.body) != "unavailable" {
			t.Errorf("%s without PostgreSQL: %d %s, want 503 unavailable", body, r.status, r.body)
		}
		if d := time.Since(start); d > actionTimeout+time.Second {
			t.Errorf("the 503 took %v, more than the action's timeout", d)
		}
	}
	if got := app.titles(t); got != "1:milk" {
		t.Errorf("after failed actions the table holds %s, want 1:milk", got)
	}

	r.Up()
	// As Herald does: the same key again until it is not a 5xx.
	for _, tc := range []struct{ body, want string }{{add, `"title":"tea"`}, {del, `{"deleted":1}`}} {
		var last reply
		wait.For(t, 10*time.Second, "the retry to succeed", func() bool {
			last = post(t, app.c, srv.URL+"/actions", tc.body, "Idempotency-Key", tc.body)
			return last.status < 500
		})
		if last.status != http.StatusOK || !strings.Contains(last.body, tc.want) {
			t.Errorf("the retried %s: %d %s, want 200 with %s", tc.body, last.status, last.body, tc.want)
		}
	}
	if got := app.titles(t); got != "2:tea" {
		t.Errorf("the table holds %s, want 2:tea", got)
	}
	app.waitState(t, "tea alone", todoJSON(2, "tea"))
}

// TestSync brings a Herald whose copy of the list is wrong (a missing
// to-do, a changed title, a stale key) up to date through the outbox, and
// then writes nothing.
func TestSync(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk", "bread", "eggs")
	ctx := context.Background()
	app.publish(t, "1", "null")
	app.publish(t, "2", `{"id":2,"title":"butter"}`)
	app.publish(t, "9", `{"id":9,"title":"stale"}`)
	app.waitState(t, "wrong", todoJSON(2, "butter"), todoJSON(3, "eggs"), todoJSON(9, "stale"))
	if n, err := app.b.sync(ctx); err != nil || n != 3 {
		t.Errorf("sync: %d written, %v; want 3", n, err)
	}
	app.waitState(t, "right", todoJSON(1, "milk"), todoJSON(2, "bread"), todoJSON(3, "eggs"))
	app.waitOutbox(t)
	if n, err := app.b.sync(ctx); err != nil || n != 0 {
		t.Errorf("sync again: %d written, %v; want none", n, err)
	}
}

// TestHeraldWithoutSource runs the sync against a Herald started without
// --source, the newcomer's likely mistake: the seed's events wait in the
// outbox, and the sync says so, naming the flag, instead of writing more.
func TestHeraldWithoutSource(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Database(t)
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := setup(ctx, db, pool, "milk"); err != nil {
		t.Fatal(err)
	}
	n := heraldtest.Start(t, server.Config{})
	b := newBackend(slog.New(slog.DiscardHandler), pool)
	api := newHeraldAPI(n.URL)
	t.Cleanup(api.client.CloseIdleConnections)
	b.setHerald(n.URL, api)

	if changed, err := b.sync(ctx); err != nil || changed != 0 {
		t.Errorf("sync while the seed's event is young: %d written, %v; want nothing, no error", changed, err)
	}
	b.outboxLag = 0
	if _, err := b.sync(ctx); err == nil || !strings.Contains(err.Error(), "--source") {
		t.Errorf("sync with an event waiting: %v, want an error that names --source", err)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM herald_outbox").Scan(&rows); err != nil || rows != 1 {
		t.Errorf("the outbox holds %d rows (%v), want the seed's one", rows, err)
	}
}

// TestHeraldRestart restarts Herald, which with the memory broker starts
// without the list, and runs the command's sync loop: the new Herald gets
// the whole list from the outbox, and the loop ends with its context.
func TestHeraldRestart(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk", "bread")
	if err, _ := app.node.Stop(t, 20*time.Second); err != nil {
		t.Fatalf("stop Herald: %v", err)
	}
	n := heraldtest.Start(t, app.cfg)
	if _, body := n.Get(t, "/v1/topics/todo.list/state"); strings.Contains(string(body), "milk") {
		t.Fatalf("a new Herald with the memory broker holds the list already: %s", body)
	}
	app.herald = n.URL
	app.api = newHeraldAPI(n.URL)
	t.Cleanup(app.api.client.CloseIdleConnections)
	app.b.setHerald(n.URL, app.api)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		app.b.keepInSync(ctx, 10*time.Millisecond)
	}()
	app.waitState(t, "back", todoJSON(1, "milk"), todoJSON(2, "bread"))
	cancel()
	<-done
}
