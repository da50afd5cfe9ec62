// Command upstream is an example backend for Herald's actions: the HTTP
// service that `herald serve --action-upstream URL` hands actions to. It
// keeps a to-do list in memory and implements three action types:
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
// Run it with `go run ./examples/upstream`, then start Herald with
// `--action-upstream http://127.0.0.1:9000/actions`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "`address` to listen on")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: newBackend(log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "url", "http://"+*addr+"/actions")
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
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

// backend serves POST /actions. One mutex guards the list and the answers:
// holding it for a whole action also makes two concurrent attempts with the
// same key run one after the other, the second replaying the first.
type backend struct {
	log *slog.Logger
	mux *http.ServeMux

	mu      sync.Mutex
	next    int
	todos   map[int]string
	answers map[string]answer // by Idempotency-Key; a real backend would expire them
}

func newBackend(log *slog.Logger) *backend {
	b := &backend{log: log, mux: http.NewServeMux(), todos: make(map[int]string), answers: make(map[string]answer)}
	b.mux.HandleFunc("POST /actions", b.action)
	return b
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
	a := b.run(c)
	if key != "" {
		b.answers[key] = a
	}
	b.log.Info("action", "id", c.ID, "type", c.Type, "topic", c.Topic, "attempt", c.Attempt,
		"key", key, "status", a.status, "answer", strings.TrimSpace(string(a.body)))
	send(w, a)
}

// run carries out one action. b.mu is held.
func (b *backend) run(c call) answer {
	switch c.Type {
	case "todo.add":
		var p struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil || p.Title == "" {
			return failure(http.StatusUnprocessableEntity, "invalid_title", `todo.add needs a payload like {"title":"milk"}`)
		}
		b.next++
		b.todos[b.next] = p.Title
		return success(map[string]any{"id": b.next, "title": p.Title})
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

func send(w http.ResponseWriter, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}
