package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// composeNode is what docker-compose.yml gives each Herald node: the
// arguments of its command and of its health check.
type composeNode struct {
	serve  []string // after "serve"
	health []string // the health check's command after "/herald"
}

// readComposeNode reads the x-herald block of docker-compose.yml.
func readComposeNode(t *testing.T) composeNode {
	t.Helper()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var node composeNode
	var command []string
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.TrimSpace(line) == "command:" && strings.HasPrefix(line, "  command:"):
			in = true
		case in && strings.HasPrefix(line, "    - "):
			command = append(command, strings.TrimPrefix(line, "    - "))
		case in:
			in = false
		}
		if test, ok := strings.CutPrefix(line, "    test: "); ok && node.health == nil {
			var cmd []string
			if err := json.Unmarshal([]byte(test), &cmd); err != nil || len(cmd) < 3 || cmd[0] != "CMD" || cmd[1] != "/herald" {
				t.Fatalf("the nodes' health check %s: want [\"CMD\", \"/herald\", …]", test)
			}
			node.health = cmd[2:]
		}
	}
	if len(command) < 2 || command[0] != "serve" {
		t.Fatalf("no herald serve command found in docker-compose.yml: %q", command)
	}
	node.serve = command[1:]
	if node.health == nil {
		t.Fatal("no health check for the nodes in docker-compose.yml")
	}
	return node
}

// TestDockerCompose checks the recipe: docker compose accepts the file,
// herald serve the flags it gives the nodes, and the nodes' health check
// passes against a node that is ready.
func TestDockerCompose(t *testing.T) {
	node := readComposeNode(t)
	if _, err := parseServeFlags(node.serve, func(string) (string, bool) { return "", false }, io.Discard); err != nil {
		t.Errorf("herald serve refuses the compose file's flags %q: %v", node.serve, err)
	}

	// The check's URL is the node's own port, which the image serves on.
	in := startServe(t, "--addr", "127.0.0.1:0")
	health := append([]string(nil), node.health...)
	last := health[len(health)-1]
	if last != "http://127.0.0.1:8080/readyz" {
		t.Errorf("the health check asks %q, want the node's /readyz on port 8080", last)
	}
	health[len(health)-1] = strings.Replace(last, "http://127.0.0.1:8080", in.URL, 1)
	var stdout, stderr strings.Builder
	if status := run(health, &stdout, &stderr); status != 0 {
		t.Errorf("health check %q: exit status %d: %s", health, status, &stderr)
	}

	var cmd *exec.Cmd
	if _, err := exec.LookPath("docker-compose"); err == nil {
		cmd = exec.Command("docker-compose", "-f", "../../docker-compose.yml", "config", "-q")
	} else if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err == nil && len(out) > 0 {
		cmd = exec.Command("docker", "compose", "-f", "../../docker-compose.yml", "config", "-q")
	} else {
		if os.Getenv("CI") != "" {
			t.Fatal("no docker compose under CI: .ci/run installs docker-compose")
		}
		t.Skip("no docker compose to validate docker-compose.yml with")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}

// TestNginxInFront runs deploy/nginx.conf in a real nginx in front of two
// nodes on one Redis, started with the compose file's flags, and talks to
// it as a browser on http://localhost:8080 would: a WebSocket with that
// Origin is accepted, an SSE stream delivers each event while it stays
// open (nothing buffered), and both get what either node publishes.
func TestNginxInFront(t *testing.T) {
	nginx := findNginx(t)
	broker := redistest.URL(t)
	var args []string
	for _, a := range readComposeNode(t).serve {
		if !strings.HasPrefix(a, "--addr=") && !strings.HasPrefix(a, "--broker=") {
			args = append(args, a)
		}
	}
	var nodes []*heraldtest.Node
	for range 2 {
		nodes = append(nodes, startServe(t, append([]string{"--addr", "127.0.0.1:0", "--broker", broker, "--log-level", "warn"}, args...)...))
	}
	front := startNginx(t, nginx, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if status, body := front.Get(t, "/readyz"); status != http.StatusOK {
		t.Fatalf("GET /readyz through nginx: %d %s", status, body)
	}

	c, resp, err := websocket.Dial(ctx, "ws://localhost:8080/v1/ws", &websocket.DialOptions{
		HTTPClient:   front.Client,
		HTTPHeader:   http.Header{"Origin": {"http://localhost:8080"}},
		Subprotocols: []string{"herald.v1"},
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("WebSocket from Origin http://localhost:8080 through nginx: status %d: %v", status, err)
	}
	defer c.CloseNow()
	if err := wsjson.Write(ctx, c, map[string]any{"op": "subscribe", "ref": "1", "topics": []string{"deploy.*"}}); err != nil {
		t.Fatal(err)
	}
	var reply struct {
		Op, Ref, ID string
		Data        struct{ Node int }
	}
	if err := wsjson.Read(ctx, c, &reply); err != nil || reply.Op != "ok" || reply.Ref != "1" {
		t.Fatalf("subscribe through nginx: %+v %v", reply, err)
	}

	lines, stopLines := heraldtest.StreamLinesVia(ctx, t, front.Client, front.URL+"/v1/events?topic=deploy.*", "")
	defer stopLines()
	heraldtest.NextLine(t, lines, "retry:") // the stream is open: Herald subscribed before it answered
	heraldtest.NextLine(t, lines, "id: ")   // the stream's start cursor, a block of its own

	// Each node publishes one event, after the previous one was read: both
	// streams must deliver it while they stay open.
	for i, node := range nodes {
		status, body := node.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"deploy.%d","data":{"node":%d}}`, i, i))
		if status != http.StatusOK {
			t.Fatalf("publish on node %d: %d %s", i, status, body)
		}
		var pub struct{ ID string }
		if err := json.Unmarshal(body, &pub); err != nil {
			t.Fatal(err)
		}
		if got := heraldtest.NextLine(t, lines, "id: "); got != "id: "+pub.ID {
			t.Errorf("SSE through nginx: %q, want the event of node %d, %s", got, i, pub.ID)
		}
		if err := wsjson.Read(ctx, c, &reply); err != nil || reply.Op != "event" || reply.ID != pub.ID || reply.Data.Node != i {
			t.Errorf("WebSocket through nginx: %+v %v, want the event of node %d, %s", reply, err, i, pub.ID)
		}
	}

	// Publishing through nginx reaches both streams as well.
	status, body := front.Post(t, "/v1/publish", `{"topic":"deploy.front","data":{"node":9}}`)
	if status != http.StatusOK {
		t.Fatalf("publish through nginx: %d %s", status, body)
	}
	heraldtest.NextLine(t, lines, "id: ")
	if err := wsjson.Read(ctx, c, &reply); err != nil || reply.Data.Node != 9 {
		t.Errorf("WebSocket through nginx: %+v %v, want the event published through nginx", reply, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// findNginx returns the nginx binary, or skips the test when there is none,
// except under CI, where .ci/run installs Debian's nginx.
func findNginx(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil { // not on a user's PATH
		return "/usr/sbin/nginx"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no nginx under CI: .ci/run installs Debian's nginx")
	}
	t.Skip("no nginx to run deploy/nginx.conf with (apt-get install nginx)")
	return ""
}

var (
	upstreamServer = regexp.MustCompile(`\bherald(\d+):8080\b`)
	listenPort     = regexp.MustCompile(`(?m)^(\s*)listen 80;$`)
)

// startNginx runs deploy/nginx.conf as the compose file does, inside the
// http block of a minimal main configuration, with the nodes' addresses in
// place of herald1, herald2, … (in turn) and a free port on 127.0.0.1 in
// place of port 80. The instance it returns is a browser's view of
// http://localhost:8080/: its client connects to nginx whatever the URL
// says, so requests carry Host: localhost:8080.
func startNginx(t *testing.T, nginx string, nodes []*heraldtest.Node) *heraldtest.Node {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(raw)
	if !upstreamServer.MatchString(conf) || !listenPort.MatchString(conf) {
		t.Fatal("deploy/nginx.conf has no upstream server heraldN:8080 or no listen 80: update startNginx with it")
	}
	conf = upstreamServer.ReplaceAllStringFunc(conf, func(m string) string {
		n, _ := strconv.Atoi(upstreamServer.FindStringSubmatch(m)[1])
		return strings.TrimPrefix(nodes[(n-1)%len(nodes)].URL, "http://")
	})
	port := heraldtest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf = listenPort.ReplaceAllString(conf, "${1}listen "+addr+";")

	dir := t.TempDir()
	mainConf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/default.conf;
}
`, dir)
	for name, text := range map[string]string{"nginx.conf": mainConf, "default.conf": conf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	out := &heraldtest.Log{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s\nconfiguration:\n%s", out, log, conf)
		}
	})
	wait.For(t, 10*time.Second, "nginx to listen on "+addr, func() bool {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %s\n%s", out, log)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &heraldtest.Node{URL: "http://localhost:8080", Client: &http.Client{Transport: tr}}
}
