package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testMain{m})
}

// testMain removes the binary that buildHerald may have built once the
// tests have run.
type testMain struct{ m *testing.M }

func (t testMain) Run() int {
	code := t.m.Run()
	if builtHerald.Load() {
		if bin, err := buildHerald(); err == nil {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	return code
}

// commandCase is one run of the herald binary's entry point: its exit
// status and what its outputs must contain. A usage error (status 2)
// must leave stdout empty.
type commandCase struct {
	name   string
	args   []string
	status int
	stdout string // substring expected on stdout
	stderr string // substring expected on stderr
}

func runCommands(t *testing.T, cases []commandCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tc.args, &stdout, &stderr); got != tc.status {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", got, tc.status, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q does not contain %q", &stdout, tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tc.stderr)
			}
			if tc.status == 2 && stdout.Len() > 0 {
				t.Errorf("stdout should be empty on a usage error, got %q", &stdout)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	runCommands(t, []commandCase{
		{name: "no command", args: nil, status: 2, stderr: "Usage:"},
		{name: "help", args: []string{"help"}, status: 0, stdout: "Commands:"},
		{name: "--help", args: []string{"--help"}, status: 0, stdout: "serve"},
		{name: "-h", args: []string{"-h"}, status: 0, stdout: "version"},
		{name: "version", args: []string{"version"}, status: 0, stdout: "herald "},
		{name: "unknown", args: []string{"frobnicate"}, status: 2, stderr: `unknown command "frobnicate"`},
		{name: "bench bad flag", args: []string{"bench", "--subscribers", "many"}, status: 2, stderr: "invalid value"},
		{name: "bench -h", args: []string{"bench", "-h"}, status: 0, stdout: "-subscribers int"},
		{name: "serve -h", args: []string{"serve", "-h"}, status: 0, stdout: "HERALD_HISTORY_SIZE"},
	})
}

func TestServeFlagsAndEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := parseServeFlags(nil, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := serveConfig{
			addr: "127.0.0.1:8080", broker: "memory", historySize: 10000, historyBytes: 256 << 20, historyTTL: time.Hour, tailBytes: 32 << 20, jwtLeeway: 30 * time.Second,
			stateMaxKeys: 10000, stateMaxBytes: 64 << 20, presenceMax: 10000,
			queueBytes: 524288, shards: 0, heartbeat: 15 * time.Second, sseRetry: 2 * time.Second,
			writeTimeout: 10 * time.Second, readTimeout: 30 * time.Second, maxBody: 1048576, maxHeaderBytes: 65536, wsReadLimit: 65536,
			wsPingInterval: 25 * time.Second, wsCompression: true, directWrites: true, shutdownTimeout: 10 * time.Second, logFormat: "text",
			actionWorkers: 16, actionQueue: 10000, actionTTL: time.Hour, actionLease: 30 * time.Second, actionMaxFinished: 100000, actionMaxBytes: 256 << 20, actionTimeout: 10 * time.Second,
			actionMaxAttempts: 5, authMode: "none", authUpstreamTO: 2 * time.Second, maxConns: 100000, wsMessageRate: 200, wsMaxTopics: 256,
		}
		c.settings = nil // compared in config_test.go
		if fmt.Sprint(c) != fmt.Sprint(want) {
			t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
		}
	})
	t.Run("env when flag absent", func(t *testing.T) {
		c, err := parseServeFlags(nil, env(map[string]string{
			"HERALD_HISTORY_SIZE":     "42",
			"HERALD_HISTORY_TTL":      "5m",
			"HERALD_ALLOWED_ORIGINS":  "app.example.com, *.example.org,",
			"HERALD_LOG_LEVEL":        "debug",
			"HERALD_WS_PING_INTERVAL": "3s",
			"HERALD_WS_COMPRESSION":   "false",
			"HERALD_SHUTDOWN_TIMEOUT": "", // empty counts as unset
		}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.historySize != 42 || c.historyTTL != 5*time.Minute || c.wsPingInterval != 3*time.Second || c.wsCompression ||
			c.logLevel.String() != "DEBUG" || c.shutdownTimeout != 10*time.Second ||
			strings.Join(c.allowedOrigins, "|") != "app.example.com|*.example.org" {
			t.Errorf("env not applied: %+v", c)
		}
	})
	t.Run("flag wins over env", func(t *testing.T) {
		c, err := parseServeFlags([]string{"--history-size", "7", "-heartbeat=1s"}, env(map[string]string{
			"HERALD_HISTORY_SIZE": "42", "HERALD_HEARTBEAT": "9s", "HERALD_QUEUE_BYTES": "1000",
		}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.historySize != 7 || c.heartbeat != time.Second || c.queueBytes != 1000 {
			t.Errorf("history-size %d heartbeat %v queue-bytes %d, want 7, 1s (flags) and 1000 (env)",
				c.historySize, c.heartbeat, c.queueBytes)
		}
	})
	t.Run("jwt leeway 0 is none", func(t *testing.T) {
		c, err := parseServeFlags([]string{"--auth", "jwt", "--jwt-secret", "0123456789abcdef0123456789abcdef"},
			env(map[string]string{"HERALD_JWT_LEEWAY": "0"}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		// The server's Config takes 0 for the default, 30 s.
		if got := c.server(nil).JWTLeeway; got >= 0 {
			t.Errorf("HERALD_JWT_LEEWAY=0 gives the server a leeway of %v, want a negative one (none)", got)
		}
	})
	t.Run("every flag has its env name", func(t *testing.T) {
		var stdout bytes.Buffer
		if _, err := parseServeFlags([]string{"-h"}, env(nil), &stdout); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("-h: %v", err)
		}
		for _, name := range []string{"addr", "broker", "history-size", "history-bytes", "history-ttl", "state-max-keys", "state-max-bytes", "queue-bytes", "shards",
			"heartbeat", "sse-retry", "write-timeout", "write-linger", "read-timeout", "max-body", "ws-read-limit", "ws-ping-interval", "ws-compression",
			"allowed-origins", "cors-origins", "max-conns", "max-conns-per-ip", "rate-publish", "rate-actions", "ws-message-rate", "ws-max-topics", "auth", "jwt-secret", "jwt-public-key", "jwt-audience", "jwt-issuer", "jwt-leeway",
			"jwt-jwks-url",
			"public-subscribe", "api-key", "shutdown-timeout", "log-level", "log-format", "action-upstream", "action-workers",
			"action-queue", "action-ttl", "action-max-bytes", "action-timeout", "action-max-attempts"} {
			if !strings.Contains(stdout.String(), "-"+name+" ") && !strings.Contains(stdout.String(), "-"+name+"\n") {
				t.Errorf("help does not list --%s", name)
			}
			c, err := parseServeFlags(nil, env(map[string]string{envName(name): "garbage-value"}), io.Discard)
			if name == "addr" || name == "allowed-origins" {
				continue // free-form strings
			}
			if err == nil {
				t.Errorf("%s=garbage-value was accepted (%+v); the variable is not wired", envName(name), c)
			}
		}
	})
}

func TestServeBadFlags(t *testing.T) {
	cases := []badServeCase{
		{"negative history size", []string{"--history-size", "-1"}, nil, "--history-size must be positive"},
		{"zero history bytes", []string{"--history-bytes", "0"}, nil, "--history-bytes must be positive"},
		{"history bytes below the largest event", []string{"--history-bytes", "1000", "--max-body", "2000"}, nil, "--history-bytes (1000) must be at least --max-body (2000)"},
		{"state bytes below the largest event", []string{"--state-max-bytes", "1000", "--max-body", "2000"}, nil, "--state-max-bytes (1000) must be at least --max-body (2000)"},
		{"action bytes below the largest action", []string{"--action-max-bytes", "1000", "--max-body", "2000"}, nil, "--action-max-bytes (1000) must be at least --max-body (2000)"},
		{"zero action bytes", []string{"--action-max-bytes", "0"}, nil, "--action-max-bytes must be positive"},
		{"zero queue bytes", []string{"--queue-bytes=0"}, nil, "--queue-bytes must be positive"},
		{"bad duration", []string{"--history-ttl", "forever"}, nil, "invalid value"},
		{"negative duration", []string{"--heartbeat", "-1s"}, nil, "--heartbeat must be positive"},
		{"zero read timeout", []string{"--read-timeout", "0s"}, nil, "--read-timeout must be positive"},
		{"not a number", []string{"--max-body", "1MB"}, nil, "invalid value"},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined"},
		{"unknown auth", []string{"--auth", "basic"}, nil, "--auth must be none, jwt or upstream"},
		{"jwt without a key", []string{"--auth", "jwt"}, nil, "--auth jwt needs --jwt-secret, --jwt-public-key or --jwt-jwks-url"},
		{"JWKS over plain HTTP to another host", []string{"--auth", "jwt", "--jwt-jwks-url", "http://id.example.com/jwks"}, nil, "--jwt-jwks-url: the JWKS URL \"http://id.example.com/jwks\" must be https://"},
		{"JWKS URL without jwt", nil, map[string]string{"HERALD_JWT_JWKS_URL": "https://id.example.com/jwks"}, "need --auth jwt"},
		{"jwt flag without jwt", nil, map[string]string{"HERALD_JWT_SECRET": "0123456789abcdef0123456789abcdef"}, "need --auth jwt"},
		{"short secret", []string{"--auth", "jwt", "--jwt-secret", "short"}, nil, "at least 32 bytes"},
		{"upstream mode without its URL", []string{"--auth", "upstream"}, nil, "--auth upstream needs --auth-upstream URL"},
		{"auth upstream without auth", nil, map[string]string{"HERALD_AUTH_UPSTREAM": "http://app/herald/auth"}, "--auth-upstream needs --auth upstream"},
		{"auth upstream not a URL", []string{"--auth", "upstream", "--auth-upstream", "app/herald/auth"}, nil, "--auth-upstream: the auth upstream URL"},
		{"jwt flag with upstream mode", []string{"--auth", "upstream", "--auth-upstream", "http://app/auth", "--jwt-issuer", "x"}, nil, "the --jwt-* flags need --auth jwt"},
		{"zero auth upstream timeout", []string{"--auth", "upstream", "--auth-upstream", "http://app/auth", "--auth-upstream-timeout", "0s"}, nil, "--auth-upstream-timeout must be positive"},
		{"missing key file", []string{"--auth", "jwt", "--jwt-public-key", "/nonexistent.pem"}, nil, "--jwt-public-key"},
		{"bad public pattern", []string{"--auth", "jwt", "--jwt-secret", "0123456789abcdef0123456789abcdef", "--public-subscribe", "a..b"}, nil, "--public-subscribe"},
		{"cors origin with a path", []string{"--cors-origins", "https://app.example.com/page"}, nil, `--cors-origins: "https://app.example.com/page" is not an origin`},
		{"cors origin without scheme", nil, map[string]string{"HERALD_CORS_ORIGINS": "app.example.com"}, `--cors-origins: "app.example.com" is not an origin`},
		{"argument", []string{"extra"}, nil, "takes no arguments"},
		{"unknown broker", []string{"--broker", "kafka://127.0.0.1:9092"}, nil, "--broker kafka://127.0.0.1:9092 is not supported"},
		{"bad redis URL", []string{"--broker", "redis://127.0.0.1:6379/notadb"}, nil, "--broker"},
		{"bad nats option from env", nil, map[string]string{"HERALD_BROKER": "nats://127.0.0.1:4222?storage=disk"}, "storage must be file or memory"},
		{"bad env value", nil, map[string]string{"HERALD_QUEUE_BYTES": "lots"}, "HERALD_QUEUE_BYTES"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format must be text or json"},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level must be"},
		{"negative shards", []string{"--shards", "-2"}, nil, "--shards must not be negative"},
		{"pprof without the internal listener", []string{"--pprof"}, nil, "--pprof needs --metrics-addr"},
		{"negative max-conns", []string{"--max-conns", "-1"}, nil, "--max-conns must not be negative"},
		{"negative jwt leeway", []string{"--jwt-leeway", "-1s"}, nil, "--jwt-leeway must not be negative"},
		{"negative max-conns-per-ip", []string{"--max-conns-per-ip", "-1"}, nil, "--max-conns-per-ip must not be negative"},
		{"negative write-linger", []string{"--write-linger", "-1ms"}, nil, "--write-linger must be between 0 and 100ms"},
		{"write-linger too long", []string{"--write-linger", "101ms"}, nil, "--write-linger must be between 0 and 100ms"},
		{"h2c with TLS", []string{"--h2c", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "--h2c is HTTP/2 without TLS"},
	}
	// A flag whose server.Config field takes its default at 0 refuses 0:
	// the flag layer passes it on so that Validate refuses it.
	for _, flag := range []string{"history-size", "history-bytes", "state-max-keys", "state-max-bytes", "queue-bytes", "heartbeat", "sse-retry",
		"write-timeout", "read-timeout", "max-body", "ws-read-limit", "ws-ping-interval", "ws-max-topics",
		"shutdown-timeout", "action-workers", "action-queue", "action-ttl", "action-max-finished",
		"action-max-bytes", "action-timeout", "action-max-attempts"} {
		cases = append(cases, badServeCase{"zero " + flag, []string{"--" + flag, "0"}, nil, "--" + flag + " must be positive"})
	}
	runBadServe(t, cases)
}

// badServeCase is a command line, and environment, that herald serve must
// refuse as a usage error whose message contains stderr.
type badServeCase struct {
	name   string
	args   []string
	env    map[string]string
	stderr string
}

// runBadServe runs herald serve on 127.0.0.1:0 with each case's flags and
// environment, and checks exit status 2, the message, and that the server
// did not listen first.
func runBadServe(t *testing.T, cases []badServeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			// An already cancelled context: if the flags were wrongly
			// accepted, the server starts and stops at once instead of
			// running until the test times out.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"--addr", "127.0.0.1:0"}, tc.args...)
			if status := exitStatus(runServe(ctx, args, &stdout, &stderr, nil), &stderr); status != 2 {
				t.Errorf("exit status %d, want 2 (stderr %q)", status, &stderr)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not mention %q", &stderr, tc.stderr)
			}
			if strings.Contains(stderr.String(), "msg=listening") {
				t.Errorf("the server listened before the usage error:\n%s", &stderr)
			}
		})
	}
}

// startServe runs "herald serve" with args in the test's process until
// the test ends.
func startServe(t *testing.T, args ...string) *heraldtest.Node {
	t.Helper()
	return heraldtest.Run(t, func(ctx context.Context, logs io.Writer, ready func(string)) error {
		return runServe(ctx, args, io.Discard, logs, ready)
	})
}
