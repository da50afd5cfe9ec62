package main

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDockerCompose checks the recipe: docker compose accepts the file,
// and the flags it gives the nodes are ones herald serve accepts.
func TestDockerCompose(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The nodes' command: the list under "command:" in the x-herald block.
	var args []string
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.TrimSpace(line) == "command:" && strings.HasPrefix(line, "  command:"):
			in = true
		case in && strings.HasPrefix(line, "    - "):
			args = append(args, strings.TrimPrefix(line, "    - "))
		case in:
			in = false
		}
	}
	if len(args) < 2 || args[0] != "serve" {
		t.Fatalf("no herald serve command found in docker-compose.yml: %q", args)
	}
	if _, err := parseServeFlags(args[1:], func(string) (string, bool) { return "", false }, io.Discard); err != nil {
		t.Errorf("herald serve refuses the compose file's flags %q: %v", args[1:], err)
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
