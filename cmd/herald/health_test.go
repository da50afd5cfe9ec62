package main

import (
	"fmt"
	"testing"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// TestHealthCommand checks a real node's /readyz as a container's health
// check would, and what it says when the answer is not 2xx or there is no
// answer at all.
func TestHealthCommand(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	closed := fmt.Sprintf("http://127.0.0.1:%d/readyz", heraldtest.FreePort(t))
	runCommands(t, []commandCase{
		{name: "ready", args: []string{"health", in.URL + "/readyz"}, status: 0, stdout: "200 OK"},
		{name: "not 2xx", args: []string{"health", in.URL + "/v1/actions/act_none"}, status: 1, stderr: "answered 404 Not Found: {\"error\":{\"code\":\"not_found\""},
		{name: "nothing listening", args: []string{"health", "--timeout", "2s", closed}, status: 1, stderr: "failed to check " + closed},
		{name: "no URL", args: []string{"health"}, status: 2, stderr: "health takes one URL"},
		{name: "not a URL", args: []string{"health", "127.0.0.1:8080"}, status: 2, stderr: "http:// or https:// URL"},
		{name: "-h", args: []string{"health", "-h"}, status: 0, stderr: "Usage: herald health"},
	})
}
