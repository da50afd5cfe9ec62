package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// buildHerald builds the herald binary once per test binary, for tests that
// must kill a node outright.
var buildHerald = sync.OnceValues(func() (string, error) {
	builtHerald.Store(true)
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// builtHerald is set once buildHerald has run.
var builtHerald atomic.Bool

// process is a herald serve in a process of its own. Its log (warnings,
// unless args set --log-level) is kept in logs and shown if the test fails.
type process struct {
	URL  string
	cmd  *exec.Cmd
	Logs *heraldtest.Log
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	port := heraldtest.FreePort(t)
	cmd := exec.Command(bin, append([]string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn"}, args...)...)
	logs := &heraldtest.Log{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, Logs: logs}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log of the node at %s:\n%s", p.URL, logs)
		}
	})
	wait.For(t, 20*time.Second, "the node to be ready", func() bool {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *process) kill() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// TestActionsSurviveNodeDeath runs three node processes on one broker
// with an upstream backend, holds every worker busy, and kills one node
// outright (SIGKILL, which only a node in a process of its own can get): every accepted action still ends succeeded, read from the
// survivors, and the killed node's actions ran again elsewhere.
func TestActionsSurviveNodeDeath(t *testing.T) {
	heraldtest.ForEachBroker(t, testActionsSurviveNodeDeath)
}

func testActionsSurviveNodeDeath(t *testing.T, broker string) {
	var (
		mu       sync.Mutex
		calls    = map[string]int{}
		inFlight int
		gate     = make(chan struct{})
	)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var call struct{ ID string }
		if err := json.NewDecoder(r.Body).Decode(&call); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls[call.ID]++
		inFlight++
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		select {
		case <-gate:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"done":%q}`, call.ID)
		case <-r.Context().Done(): // the node died
		}
	}))
	defer backend.Close()
	const workers = 4
	var nodes []*process
	for range 3 {
		nodes = append(nodes, startProcess(t, "--broker", broker, "--action-upstream", "work="+backend.URL,
			"--action-workers", strconv.Itoa(workers), "--action-lease", "1s", "--action-timeout", "60s"))
	}
	post := func(p *process, body string) (int, []byte) {
		resp, err := http.Post(p.URL+"/v1/actions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	const total = 30
	ids := make([]string, 0, total)
	for i := range total {
		status, body := post(nodes[i%2], fmt.Sprintf(`{"type":"work","topic":"jobs","payload":%d}`, i))
		var a struct{ ID string }
		if status != http.StatusAccepted || json.Unmarshal(body, &a) != nil {
			t.Fatalf("submit %d: %d %s", i, status, body)
		}
		ids = append(ids, a.ID)
	}
	// Every worker of every node is busy: the node killed now has actions
	// in flight.
	wait.For(t, 30*time.Second, "every worker to be busy", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inFlight == 3*workers
	})
	nodes[2].kill()
	close(gate)

	for _, id := range ids {
		wait.For(t, 60*time.Second, "action "+id+" to succeed on a survivor", func() bool {
			resp, err := http.Get(nodes[0].URL + "/v1/actions/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var a struct{ Status string }
			return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&a) == nil && a.Status == "succeeded"
		})
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for _, id := range ids {
		if calls[id] == 0 {
			t.Errorf("action %s succeeded without reaching the backend", id)
		}
		if calls[id] > 1 {
			again++
		}
	}
	if again < workers {
		t.Errorf("%d actions ran twice; the killed node had %d in flight, which should have run again", again, workers)
	}
}
