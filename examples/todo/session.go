package main

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"sync"
)

// The page's cookie session, and the endpoint Herald asks what a session
// may do when it runs with --auth upstream --auth-upstream
// http://127.0.0.1:9000/herald/auth. The browser sends the cookie to
// Herald too (cookies are per host, not per port, and herald.js is
// configured with credentials: 'include'); Herald forwards it here, and
// never needs a token of its own.

const (
	sessionCookie = "todo_session"
	// maxSessions bounds the sessions kept; past it the oldest go, and
	// their pages get a new session on their next load.
	maxSessions = 10000
	// grantsTTL is how long Herald may keep an answer (expires_in): a
	// session's connections ask again after it.
	grantsTTL = 300
)

// sessions maps session IDs to visitors' names. Safe for concurrent use.
type sessions struct {
	mu    sync.Mutex
	names map[string]string
	order []string // IDs, oldest first
}

func newSessions() *sessions { return &sessions{names: make(map[string]string)} }

// ensure returns the name of r's session, setting a new session's cookie
// on w when r has none the backend knows.
func (s *sessions) ensure(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if name, ok := s.lookup(c.Value); ok {
			return name
		}
	}
	id, name := rand.Text(), "guest-"+rand.Text()[:6]
	s.mu.Lock()
	if len(s.order) >= maxSessions {
		delete(s.names, s.order[0])
		s.order = s.order[1:]
	}
	s.names[id] = name
	s.order = append(s.order, id)
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return name
}

func (s *sessions) lookup(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.names[id]
	return name, ok
}

// heraldAuth answers Herald's question (POST /herald/auth): the session
// of the forwarded cookie may read the list, see who is here and add and
// delete to-dos; a request without a known session is refused with 401.
func (b *backend) heraldAuth(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(sessionCookie)
	var name string
	ok := err == nil
	if ok {
		name, ok = b.sessions.lookup(c.Value)
	}
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"user":       name,
		"info":       map[string]string{"name": name},
		"subscribe":  []string{"todo.list"},
		"actions":    []string{"todo.*"},
		"expires_in": grantsTTL,
	})
}
