// Command todo is Herald's example application: a to-do list whose page
// updates live in every open tab, and the backend that runs its actions.
//
// The list lives in Herald, as the keyed topic todo.list: one key per
// to-do, its ID, whose latest event is the to-do (see herald.go). The page
// (GET /) subscribes to the topic and gets the list from Herald, then every
// change. Adding or deleting a to-do sends a JSON action to Herald with
// fetch, without reloading the page. Herald answers 202 at once and hands
// the action to this backend (POST /actions, the --action-upstream of
// herald serve). The backend changes its list, publishes the changed key to
// Herald (null for a deleted to-do), and answers; Herald then publishes the
// answer, the action's result, to todo.list as well. The action types:
//
//	todo.add     {"title":"milk"}  -> {"id":1,"title":"milk"}
//	todo.delete  {"id":1}          -> {"deleted":1}
//	todo.fail    anything          -> 422 {"error":{"code":"refused",...}}
//
// Herald POSTs {"id","type","topic","payload","attempt"} with an
// Idempotency-Key header. A 2xx answer's JSON body is the action's result;
// a 4xx answer with {"error":{"code","message"}} is a final failure that
// clients see as it is; a 5xx answer (or no answer) makes Herald try again
// with the same Idempotency-Key. So the backend remembers each key's answer
// and replays it, and a retried todo.add never adds the item twice.
//
// The backend's own list is the truth; Herald's state is a copy. Every few
// seconds the backend compares the two and publishes what differs, so the
// copy is right again soon after Herald starts or restarts.
//
// Each page gets a cookie session; with --auth upstream --auth-upstream
// http://127.0.0.1:9000/herald/auth, Herald asks the backend what a
// session may do (session.go).
//
// Run it with `go run ./examples/todo`, and Herald with
// `--action-upstream http://127.0.0.1:9000/actions --cors-origins http://127.0.0.1:9000`
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "`address` to listen on")
	heraldURL := flag.String("herald", "http://127.0.0.1:8080", "the `URL` of Herald, where the page loads herald.js from and sends actions to, and the backend publishes the list")
	apiKey := flag.String("api-key", os.Getenv("HERALD_API_KEY"), "Herald's API `key`, if it requires one to publish (default $HERALD_API_KEY)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	base := strings.TrimRight(*heraldURL, "/")
	b := newBackend(log)
	b.setHerald(base, newHeraldAPI(base, *apiKey))
	b.seed("milk", "bread", "eggs")
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
		"auth", "http://"+*addr+"/herald/auth", "herald", *heraldURL)
	err := srv.ListenAndServe()
	stop()
	<-synced
	if !errors.Is(err, http.ErrServerClosed) {
		log.Error("failed to serve", "err", err)
		os.Exit(1)
	}
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

// backend serves the page (GET /) and the actions (POST /actions). One
// mutex guards the list and the answers, and is held while the list's
// changes are published: holding it for a whole action makes two
// concurrent attempts with the same key run one after the other, the
// second replaying the first, and keeps Herald's copy in the list's order
// of changes.
type backend struct {
	log    *slog.Logger
	mux    *http.ServeMux
	api    atomic.Pointer[heraldAPI] // where the list's changes go
	herald atomic.Pointer[string]    // Herald's base URL, for the page

	mu      sync.Mutex
	next    int
	todos   map[int]string
	answers map[string]answer // by Idempotency-Key; a real backend would expire them

	sessions *sessions // the pages' cookie sessions (session.go)
}

func newBackend(log *slog.Logger) *backend {
	b := &backend{log: log, mux: http.NewServeMux(), todos: make(map[int]string), answers: make(map[string]answer),
		sessions: newSessions()}
	b.setHerald("http://127.0.0.1:8080", newHeraldAPI("http://127.0.0.1:8080", ""))
	b.mux.HandleFunc("POST /actions", b.action)
	b.mux.HandleFunc("GET /{$}", b.page)
	b.mux.HandleFunc("POST /herald/auth", b.heraldAuth)
	return b
}

// seed adds to-dos, so that a fresh page has something to delete. They
// reach Herald with the next sync.
func (b *backend) seed(titles ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, title := range titles {
		b.next++
		b.todos[b.next] = title
	}
}

// setHerald sets the URL the page talks to Herald at, and the API the
// backend publishes through, whose URL may differ (a proxy in between
// pages and Herald). It may be called while serving.
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
	ID    int    `json:"id"`
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

	b.mu.Lock()
	defer b.mu.Unlock()
	if a, ok := b.answers[key]; ok && key != "" {
		b.log.Info("repeated action", "id", c.ID, "type", c.Type, "attempt", c.Attempt, "key", key, "status", a.status)
		send(w, a)
		return
	}
	a := b.run(r.Context(), c)
	if key != "" && a.status < 500 {
		b.answers[key] = a
	}
	b.log.Info("action", "id", c.ID, "type", c.Type, "topic", c.Topic, "attempt", c.Attempt,
		"key", key, "status", a.status, "answer", strings.TrimSpace(string(a.body)))
	send(w, a)
}

// run carries out one action. b.mu is held. A change is published to
// Herald first and made to the list only once Herald has it: if publishing
// fails, nothing changed, and the 503 makes Herald try the action again.
func (b *backend) run(ctx context.Context, c call) answer {
	switch c.Type {
	case "todo.add":
		var p struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil || p.Title == "" {
			return failure(http.StatusUnprocessableEntity, "invalid_title", `todo.add needs a payload like {"title":"milk"}`)
		}
		t := todo{ID: b.next + 1, Title: p.Title}
		if err := b.api.Load().put(ctx, t); err != nil {
			return unavailable(err)
		}
		b.next = t.ID
		b.todos[t.ID] = t.Title
		return success(t)
	case "todo.delete":
		var p struct {
			ID int `json:"id"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil {
			return failure(http.StatusUnprocessableEntity, "invalid_id", `todo.delete needs a payload like {"id":1}`)
		}
		if _, ok := b.todos[p.ID]; !ok {
			return failure(http.StatusUnprocessableEntity, "not_found", fmt.Sprintf("there is no todo %d", p.ID))
		}
		if err := b.api.Load().remove(ctx, p.ID); err != nil {
			return unavailable(err)
		}
		delete(b.todos, p.ID)
		return success(map[string]any{"deleted": p.ID})
	case "todo.fail":
		return failure(http.StatusUnprocessableEntity, "refused", "todo.fail always fails: this is how a backend refuses an action")
	default:
		return failure(http.StatusUnprocessableEntity, "unknown_type", fmt.Sprintf("this backend does not know %q", c.Type))
	}
}

func success(result any) answer {
	body, _ := json.Marshal(result)
	return answer{status: http.StatusOK, body: append(body, '\n')}
}

// failure is a final failure: Herald passes code and message on to clients.
func failure(status int, code, message string) answer {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return answer{status: status, body: append(body, '\n')}
}

// unavailable is a failure Herald retries: the change could not be
// published.
func unavailable(err error) answer {
	return failure(http.StatusServiceUnavailable, "unavailable", err.Error())
}

func send(w http.ResponseWriter, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}
