// Command authappd is the application that tests of --auth-upstream ask
// for grants: a program of its own, so that a test can stop it outright.
// It prints "listening on ADDR" once it accepts connections.
//
// Sessions are the cookie sid (or "Authorization: App NAME"):
//
//	alice   user alice: subscribe chat.*, publish chat.*, actions echo
//	bob     user bob: subscribe news.*
//	nobody  403
//	slow    answers only when the request ends (Herald's timeout)
//	user-N  user user-N: subscribe chat.* (any N: many sessions)
//	other   401
//
// POST /mode sets how every call is answered from then on: "grant" (the
// above, the default), "deny" (403), "unauthorized" (401), "error" (500)
// or "garbage" (200 that is not JSON). GET /calls reports the calls made
// so far and the Cookie and Authorization headers of each.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
)

type call struct {
	Cookie        string          `json:"cookie"`
	Authorization string          `json:"authorization"`
	Body          json.RawMessage `json:"body"`
}

type app struct {
	expiresIn float64

	mu    sync.Mutex
	mode  string
	calls []call
}

var grants = map[string]map[string]any{
	"alice": {"user": "alice", "subscribe": []string{"chat.*"}, "publish": []string{"chat.*"}, "actions": []string{"echo"},
		"info": map[string]string{"name": "Alice"}},
	"bob": {"user": "bob", "subscribe": []string{"news.*"}},
}

func (a *app) auth(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if !json.Valid(body) {
		body = []byte("null")
	}
	a.mu.Lock()
	a.calls = append(a.calls, call{Cookie: r.Header.Get("Cookie"), Authorization: r.Header.Get("Authorization"), Body: body})
	mode := a.mode
	a.mu.Unlock()

	session := ""
	if c, err := r.Cookie("sid"); err == nil {
		session = c.Value
	} else if name, ok := strings.CutPrefix(r.Header.Get("Authorization"), "App "); ok {
		session = name
	}
	switch mode {
	case "deny":
		w.WriteHeader(http.StatusForbidden)
		return
	case "unauthorized":
		w.WriteHeader(http.StatusUnauthorized)
		return
	case "error":
		http.Error(w, "the database is down", http.StatusInternalServerError)
		return
	case "garbage":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"user":"alice","subscribe":"chat.*"`)
		return
	}
	switch session {
	case "slow":
		<-r.Context().Done()
		return
	case "nobody":
		w.WriteHeader(http.StatusForbidden)
		return
	}
	g, ok := grants[session]
	if strings.HasPrefix(session, "user-") {
		g, ok = map[string]any{"user": session, "subscribe": []string{"chat.*"}}, true
	}
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	out := map[string]any{"expires_in": a.expiresIn}
	for k, v := range g {
		out[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	expires := flag.Float64("expires-in", 60, "the expires_in of every grant, in seconds")
	flag.Parse()
	a := &app{expiresIn: *expires, mode: "grant"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /auth", a.auth)
	mux.HandleFunc("POST /mode", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64))
		a.mu.Lock()
		a.mode = strings.TrimSpace(string(b))
		a.mu.Unlock()
	})
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		json.NewEncoder(w).Encode(a.calls)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
