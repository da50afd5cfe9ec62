// Command todo is Herald's example application: a to-do list whose page
// updates live in every open tab, and the backend that runs its actions.
//
// The list lives in PostgreSQL (--db), in the table todo_items (store.go).
// Herald holds a copy of it as the keyed topic todo.list: one key per
// to-do, its ID, whose latest event is the to-do (see herald.go). The page
// (GET /) subscribes to the topic and gets the list from Herald, then every
// change. Adding or deleting a to-do sends a JSON action to Herald with
// fetch, without reloading the page. Herald answers 202 at once and hands
// the action to this backend (POST /actions, the --action-upstream of
// herald serve). The backend changes the table and writes the changed
// key's event into the outbox table herald_outbox (null for a deleted
// to-do) in one transaction, and answers; Herald, run with --source
// 'postgres://…?table=herald_outbox', publishes the event once the
// transaction commits, and publishes the answer, the action's result, to
// todo.list as well. The action types:
//
//	todo.add     {"title":"milk"}  -> {"id":1,"title":"milk"}
//	todo.delete  {"id":1}          -> {"deleted":1}
//	todo.fail    anything          -> 422 {"error":{"code":"refused",...}}
//
// Herald POSTs {"id","type","topic","payload","attempt"} with an
// Idempotency-Key header. A 2xx answer's JSON body is the action's result;
// a 4xx answer with {"error":{"code","message"}} is a final failure that
// clients see as it is; a 5xx answer (or no answer) makes Herald try again
// with the same Idempotency-Key. So the backend keeps each key's answer,
// in the transaction of the action's change, and replays it: a retried
// todo.add never adds the item twice.
//
// The table is the truth; Herald's state is a copy. Every few seconds the
// backend compares the two and writes events for what differs into the
// outbox (sync.go), so the copy is right again soon after a Herald without
// a shared broker restarts.
//
// Each page gets a cookie session; with --auth upstream --auth-upstream
// http://127.0.0.1:9000/herald/auth, Herald asks the backend what a
// session may do (session.go).
//
// Run it with `go run ./examples/todo`, and Herald with
// `--action-upstream http://127.0.0.1:9000/actions --cors-origins http://127.0.0.1:9000
// --source 'postgres://postgres@127.0.0.1:5432/todo?sslmode=disable&table=herald_outbox'`
// (see README.md).
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// defaultDB is where the list lives unless --db or TODO_DB says otherwise:
// the machine's PostgreSQL, as in CI.
const defaultDB = "postgres://postgres@127.0.0.1:5432/todo?sslmode=disable"

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "`address` to listen on")
	heraldURL := flag.String("herald", "http://127.0.0.1:8080", "the `URL` of Herald, where the page loads herald.js from and sends actions to, and the backend reads Herald's copy of the list")
	dbURL := flag.String("db", envOr("TODO_DB", defaultDB), "the PostgreSQL `URL` of the database that holds the list and the outbox, created if missing (default $TODO_DB)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	pool, err := pgxpool.New(sctx, *dbURL)
	if err == nil {
		err = setup(sctx, *dbURL, pool, "milk", "bread", "eggs")
	}
	cancel()
	if err != nil {
		log.Error("failed to set up the database; is PostgreSQL running? (.ci/run starts it)", "db", redact(*dbURL), "err", err)
		os.Exit(1)
	}
	defer pool.Close()

	base := strings.TrimRight(*heraldURL, "/")
	b := newBackend(log, pool)
	b.setHerald(base, newHeraldAPI(base))
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		b.keepInSync(ctx, 3*time.Second)
	}()
	srv := &http.Server{Addr: *addr, Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "page", "http://"+*addr+"/", "actions", "http://"+*addr+"/actions",
		"auth", "http://"+*addr+"/herald/auth", "herald", *heraldURL, "db", redact(*dbURL))
	err = srv.ListenAndServe()
	stop()
	<-synced
	if !errors.Is(err, http.ErrServerClosed) {
		log.Error("failed to serve", "err", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// redact drops the password from a database URL, for the log.
func redact(dbURL string) string {
	if cfg, err := pgx.ParseConfig(dbURL); err == nil {
		return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	}
	return "(invalid)"
}

// call is the request body Herald sends for each attempt at an action.
type call struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
	Attempt int             `json:"attempt"`
}

// answer is a response as sent, kept to be sent again for a repeated key.
type answer struct {
	status int
	body   []byte
}

// actionTimeout bounds an action's transaction; Herald gives up on an
// attempt after --action-timeout, 10 s by default.
const actionTimeout = 5 * time.Second

// backend serves the page (GET /) and the actions (POST /actions). Its
// state is in PostgreSQL, whose transactions are what keep concurrent
// actions apart; it is safe for concurrent use.
type backend struct {
	log    *slog.Logger
	mux    *http.ServeMux
	db     *pgxpool.Pool
	api    atomic.Pointer[heraldAPI] // where Herald's copy of the list is read
	herald atomic.Pointer[string]    // Herald's base URL, for the page

	sessions *sessions // the pages' cookie sessions (session.go)

	outboxLag time.Duration // see defaultOutboxLag; set before serving
}

func newBackend(log *slog.Logger, db *pgxpool.Pool) *backend {
	b := &backend{log: log, mux: http.NewServeMux(), db: db, sessions: newSessions(), outboxLag: defaultOutboxLag}
	b.setHerald("http://127.0.0.1:8080", newHeraldAPI("http://127.0.0.1:8080"))
	b.mux.HandleFunc("POST /actions", b.action)
	b.mux.HandleFunc("GET /{$}", b.page)
	b.mux.HandleFunc("POST /herald/auth", b.heraldAuth)
	return b
}

// setHerald sets the URL the page talks to Herald at, and the API the
// backend reads Herald's copy of the list through, whose URL may differ (a
// proxy in between pages and Herald). It may be called while serving.
func (b *backend) setHerald(pageURL string, api *heraldAPI) {
	b.herald.Store(&pageURL)
	b.api.Store(api)
}

//go:embed index.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

func (b *backend) page(w http.ResponseWriter, r *http.Request) {
	b.sessions.ensure(w, r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	if err := pageTemplate.Execute(w, struct{ Herald string }{*b.herald.Load()}); err != nil {
		b.log.Error("failed to render the page", "err", err)
	}
}

// todo is one item of the list, as its key's events and todo.add's result
// carry it.
type todo struct {
	ID    int64  `json:"id"`
	Title string `json:"title"`
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.mux.ServeHTTP(w, r) }

func (b *backend) action(w http.ResponseWriter, r *http.Request) {
	var c call
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &c)
	}
	if err != nil {
		send(w, failure(http.StatusBadRequest, "bad_request", "the body is not an action: "+err.Error()))
		return
	}
	key := r.Header.Get("Idempotency-Key")
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	a, repeated, err := b.runOnce(ctx, key, c)
	if err != nil {
		// Nothing changed, nothing was kept: Herald's retry runs it again.
		b.log.Warn("action failed; Herald will try again", "id", c.ID, "type", c.Type, "attempt", c.Attempt, "key", key, "err", err)
		send(w, failure(http.StatusServiceUnavailable, "unavailable", "the database failed; try again"))
		return
	}
	msg := "action"
	if repeated {
		msg = "repeated action"
	}
	b.log.Info(msg, "id", c.ID, "type", c.Type, "topic", c.Topic, "attempt", c.Attempt,
		"key", key, "status", a.status, "answer", strings.TrimSpace(string(a.body)))
	send(w, a)
}

// runOnce runs an action in one transaction with its answer, kept under
// key: either the change, its event and its answer all commit, or none
// does. A key whose answer is kept gets it again, and changes nothing.
// Attempts with the same key run one after the other (the transaction's
// advisory lock), so the second replays the first.
func (b *backend) runOnce(ctx context.Context, key string, c call) (a answer, repeated bool, err error) {
	tx, err := b.db.Begin(ctx)
	if err != nil {
		return answer{}, false, fmt.Errorf("failed to begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if key != "" {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "todo.answer:"+key); err != nil {
			return answer{}, false, fmt.Errorf("failed to lock the key: %w", err)
		}
		var body string
		err := tx.QueryRow(ctx, "SELECT status, body FROM todo_answers WHERE key = $1", key).Scan(&a.status, &body)
		if err == nil {
			return answer{status: a.status, body: []byte(body)}, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return answer{}, false, fmt.Errorf("failed to look up the key: %w", err)
		}
	}
	if a, err = run(ctx, tx, c); err != nil {
		return answer{}, false, err
	}
	if key != "" {
		if _, err := tx.Exec(ctx, "INSERT INTO todo_answers (key, status, body) VALUES ($1, $2, $3)", key, a.status, string(a.body)); err != nil {
			return answer{}, false, fmt.Errorf("failed to keep the answer: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return answer{}, false, fmt.Errorf("failed to commit: %w", err)
	}
	return a, false, nil
}

// run carries out one action in tx: the change and its event, or a final
// failure that changes nothing. An error is the database's, and the
// caller rolls tx back.
func run(ctx context.Context, tx pgx.Tx, c call) (answer, error) {
	switch c.Type {
	case "todo.add":
		var p struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil || p.Title == "" {
			return failure(http.StatusUnprocessableEntity, "invalid_title", `todo.add needs a payload like {"title":"milk"}`), nil
		}
		if len(p.Title) > maxTitle {
			return failure(http.StatusUnprocessableEntity, "invalid_title", fmt.Sprintf("a title has at most %d bytes", maxTitle)), nil
		}
		t, err := addTodo(ctx, tx, p.Title)
		if err != nil {
			return answer{}, err
		}
		return success(t), nil
	case "todo.delete":
		var p struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil {
			return failure(http.StatusUnprocessableEntity, "invalid_id", `todo.delete needs a payload like {"id":1}`), nil
		}
		found, err := deleteTodo(ctx, tx, p.ID)
		if err != nil {
			return answer{}, err
		}
		if !found {
			return failure(http.StatusUnprocessableEntity, "not_found", fmt.Sprintf("there is no todo %d", p.ID)), nil
		}
		return success(map[string]any{"deleted": p.ID}), nil
	case "todo.fail":
		return failure(http.StatusUnprocessableEntity, "refused", "todo.fail always fails: this is how a backend refuses an action"), nil
	default:
		return failure(http.StatusUnprocessableEntity, "unknown_type", fmt.Sprintf("this backend does not know %q", c.Type)), nil
	}
}

// maxTitle bounds a to-do's title, well inside an event's data bound.
const maxTitle = 1000

func success(result any) answer {
	body, _ := json.Marshal(result)
	return answer{status: http.StatusOK, body: append(body, '\n')}
}

// failure is a final failure: Herald passes code and message on to clients.
func failure(status int, code, message string) answer {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return answer{status: status, body: append(body, '\n')}
}

func send(w http.ResponseWriter, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}
