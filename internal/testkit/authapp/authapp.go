// Package authapp runs the application of the tests of Herald's auth
// upstream (--auth-upstream) in a process of its own: the program
// authappd, built once per test binary. See authappd for its sessions.
package authapp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// build builds authappd once per test binary.
var build = sync.OnceValues(func() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir, err := os.MkdirTemp("", "herald-authapp-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "authappd")
	cmd := exec.Command("go", "build", "-o", bin, "./authappd")
	cmd.Dir = filepath.Dir(file)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build authappd: %v\n%s", err, out)
	}
	return bin, nil
})

// App is a running authappd. Its methods may be called from any goroutine.
type App struct {
	// URL is its grants endpoint, the value of --auth-upstream.
	URL  string
	base string
	cmd  *exec.Cmd
	once sync.Once
}

// Call is one call the application received.
type Call struct {
	Cookie        string          `json:"cookie"`
	Authorization string          `json:"authorization"`
	Body          json.RawMessage `json:"body"`
}

// Start runs authappd, whose grants say expires_in seconds, until the test
// ends (or Stop).
func Start(t testing.TB, expiresIn float64) *App {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-expires-in", strconv.FormatFloat(expiresIn, 'f', -1, 64))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &App{cmd: cmd}
	t.Cleanup(a.Stop)
	line := make(chan string, 1)
	go func() { // ends when the process's stdout closes, with it
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		for sc.Scan() {
		}
	}()
	select {
	case l := <-line:
		addr, ok := strings.CutPrefix(l, "listening on ")
		if !ok {
			t.Fatalf("authappd said %q", l)
		}
		a.base = "http://" + addr
		a.URL = a.base + "/auth"
	case <-time.After(20 * time.Second):
		t.Fatal("authappd did not start within 20s")
	}
	return a
}

// Stop kills the process: the application is down from then on.
func (a *App) Stop() {
	a.once.Do(func() {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	})
}

// SetMode sets how every call is answered from now on (see authappd).
func (a *App) SetMode(t testing.TB, mode string) {
	t.Helper()
	resp, err := http.Post(a.base+"/mode", "text/plain", strings.NewReader(mode))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// Calls returns the calls received so far.
func (a *App) Calls(t testing.TB) []Call {
	t.Helper()
	resp, err := http.Get(a.base + "/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var calls []Call
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatal(err)
	}
	return calls
}
