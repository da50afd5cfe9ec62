package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeConfig writes a configuration file in a directory of the test's own
// and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// envOf is a getenv that sees only kv.
func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

// sourceOf returns where the flag name of c came from.
func sourceOf(t *testing.T, c serveConfig, name string) string {
	t.Helper()
	for _, s := range c.settings {
		if s.name == name {
			return s.source
		}
	}
	t.Fatalf("no setting %s in %+v", name, c.settings)
	return ""
}

// configString is c as text, without the record of sources, so that two
// configurations can be compared.
func configString(c serveConfig) string {
	c.settings = nil
	return fmt.Sprintf("%+v", c)
}

func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `# every layer sets some of these
history-size: 100          # int: the flag wins
history-ttl: 5m            # duration: the environment wins
log-format: json           # string: the flag wins
rate-publish: 2.5          # float: the environment wins
heartbeat: 3s              # the file alone
shards: 2
allowed-origins: [app.example.com, "*.example.org"]
public-subscribe:
  - news.>
  - status.*
auth: jwt
jwt-secret: 0123456789abcdef0123456789abcdef
`)
	c, err := parseServeFlags([]string{"--config", path, "--history-size", "300", "--log-format=text"}, envOf(map[string]string{
		"HERALD_HISTORY_SIZE": "200",
		"HERALD_HISTORY_TTL":  "6m",
		"HERALD_RATE_PUBLISH": "3.5",
		"HERALD_QUEUE_BYTES":  "1000",
		"HERALD_SHARDS":       "", // empty counts as unset: the file's value stays
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, check := range []struct {
		name   string
		ok     bool
		source string
	}{
		{"history-size", c.historySize == 300, fromFlag},
		{"log-format", c.logFormat == "text", fromFlag},
		{"history-ttl", c.historyTTL == 6*time.Minute, "env HERALD_HISTORY_TTL"},
		{"rate-publish", c.ratePublish == 3.5, "env HERALD_RATE_PUBLISH"},
		{"queue-bytes", c.queueBytes == 1000, "env HERALD_QUEUE_BYTES"},
		{"heartbeat", c.heartbeat == 3*time.Second, fromFile},
		{"shards", c.shards == 2, fromFile},
		{"allowed-origins", strings.Join(c.allowedOrigins, "|") == "app.example.com|*.example.org", fromFile},
		{"public-subscribe", fmt.Sprint(c.publicSubscribe) == "[news.> status.*]", fromFile},
		{"jwt-secret", c.authMode == "jwt" && c.jwtSecret == "0123456789abcdef0123456789abcdef", fromFile},
		{"max-body", c.maxBody == 1<<20, fromDefault},
	} {
		if !check.ok {
			t.Errorf("%s has the wrong value: %+v", check.name, c)
		}
		if got := sourceOf(t, c, check.name); got != check.source {
			t.Errorf("%s comes from %q, want %q", check.name, got, check.source)
		}
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	fromEnv := writeConfig(t, "history-size: 11\n")
	fromFlag := writeConfig(t, "history-size: 22\n")
	env := envOf(map[string]string{"HERALD_CONFIG": fromEnv})

	c, err := parseServeFlags(nil, env, io.Discard)
	if err != nil || c.historySize != 11 || sourceOf(t, c, "config") != "env HERALD_CONFIG" {
		t.Errorf("HERALD_CONFIG: history-size %d, %v; want 11 from its file", c.historySize, err)
	}
	c, err = parseServeFlags([]string{"--config", fromFlag}, env, io.Discard)
	if err != nil || c.historySize != 22 {
		t.Errorf("--config over HERALD_CONFIG: history-size %d, %v; want 22 from the flag's file", c.historySize, err)
	}
	c, err = parseServeFlags([]string{"--config="}, env, io.Discard)
	if err != nil || c.historySize != 10000 {
		t.Errorf("--config= (no file) over HERALD_CONFIG: history-size %d, %v; want the default", c.historySize, err)
	}
}

func TestConfigFileEmpty(t *testing.T) {
	defaults, err := parseServeFlags(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"", "\n\n", "# nothing set yet\n", "---\n", "--- # empty\n...\n"} {
		c, err := parseServeFlags([]string{"--config", writeConfig(t, content)}, envOf(nil), io.Discard)
		if err != nil {
			t.Errorf("%q: %v", content, err)
			continue
		}
		if configString(c) != configString(defaults) {
			t.Errorf("%q: got %+v, want the defaults", content, c)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name, content string
		want          []string // substrings of the error
	}{
		{"unknown key with a suggestion", "history-size: 5\n\nhisotry-ttl: 1m\n",
			[]string{"herald.yaml:3:", `unknown key "hisotry-ttl"`, `did you mean "history-ttl"?`}},
		{"unknown key in snake case", "log_level: debug\n",
			[]string{"herald.yaml:1:", `unknown key "log_level"`, `did you mean "log-level"?`}},
		{"unknown key far from any", "colour: blue\n",
			[]string{"herald.yaml:1:", `unknown key "colour"`, `herald serve -h`}},
		{"config in the file", "addr: 127.0.0.1:0\nconfig: other.yaml\n",
			[]string{"herald.yaml:2:", `"config" cannot be set in a configuration file`}},
		{"not a number", "addr: 127.0.0.1:0\nhistory-size: lots\n",
			[]string{"herald.yaml:2:", `invalid value "lots" for history-size`}},
		{"a float for an int", "max-body: 1.5\n",
			[]string{"herald.yaml:1:", `invalid value "1.5" for max-body`}},
		{"a duration without unit", "\n\nheartbeat: 30\n",
			[]string{"herald.yaml:3:", `invalid value "30" for heartbeat`}},
		{"a list for a single value", "history-size: [1, 2]\n",
			[]string{"herald.yaml:1:", "history-size: want a single value, not a list"}},
		{"nested map", "broker:\n  url: redis://127.0.0.1:6379/0\n",
			[]string{"herald.yaml:1:", "broker: want a value, not a nested mapping"}},
		{"a map in a list", "allowed-origins:\n  - app.example.com\n  - {host: x}\n",
			[]string{"herald.yaml:1:", "allowed-origins: line 3: a list item must be a single value"}},
		{"a comma in a list item", "cors-origins: [\"https://a.example.com,https://b.example.com\"]\n",
			[]string{"herald.yaml:1:", "holds a comma"}},
		{"no value", "api-key:\n",
			[]string{"herald.yaml:1:", "api-key: no value"}},
		{"twice", "shards: 1\nshards: 2\n",
			[]string{"herald.yaml:2:", "shards is set twice (first on line 1)"}},
		{"not a mapping", "- history-size: 5\n",
			[]string{"herald.yaml:1:", "want a mapping of flag names to values"}},
		{"a scalar", "history-size\n",
			[]string{"herald.yaml:1:", "want a mapping"}},
		{"two documents", "shards: 1\n---\nshards: 2\n",
			[]string{"herald.yaml:", "one YAML document"}},
		{"bad YAML", "shards: 1\n  addr: [\n",
			[]string{"herald.yaml:", "yaml:"}},
		{"a bad value caught by validation", "history-size: -1\n",
			[]string{"--history-size must be positive"}},
		{"a bad list item caught by validation", "public-subscribe: [news.>, a..b]\n",
			[]string{"--public-subscribe"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			// A valid value in the environment does not hide a bad file.
			_, err := parseServeFlags([]string{"--config", path}, envOf(map[string]string{"HERALD_HEARTBEAT": "1s"}), io.Discard)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := parseServeFlags([]string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, envOf(nil), io.Discard)
		if !errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "--config: open ") || !strings.Contains(err.Error(), "nope.yaml") {
			t.Errorf("got %v, want a usage error naming the flag and the file", err)
		}
		_, err = parseServeFlags(nil, envOf(map[string]string{"HERALD_CONFIG": "/nonexistent/nope.yaml"}), io.Discard)
		if !errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "HERALD_CONFIG: open /nonexistent/nope.yaml") {
			t.Errorf("got %v, want a usage error naming the variable and the file", err)
		}
	})
	t.Run("serve exits 2", func(t *testing.T) {
		// An already cancelled context: were the file wrongly accepted,
		// the server would stop at once rather than run on.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var stderr strings.Builder
		path := writeConfig(t, "addr: 127.0.0.1:0\nhistroy-size: 5\n")
		if got := exitStatus(runServe(ctx, []string{"--config", path}, io.Discard, &stderr, nil), &stderr); got != 2 {
			t.Errorf("exit status %d, want 2 (%s)", got, &stderr)
		}
		if !strings.Contains(stderr.String(), `herald.yaml:2: unknown key "histroy-size" (did you mean "history-size"?)`) {
			t.Errorf("stderr %q", &stderr)
		}
	})
}

// TestConfigAnyFlag loads a file into a flag set of every kind of flag, as
// later serve flags may be: the loader knows none of them by name.
func TestConfigAnyFlag(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.String(configFlag, "", "")
	on := fs.Bool("h2c", false, "a boolean")
	n := fs.Uint("workers", 1, "an unsigned")
	big := fs.Int64("bytes", 1, "an int64")
	ratio := fs.Float64("ratio", 1, "a float")
	d := fs.Duration("wait", time.Second, "a duration")
	name := fs.String("name", "", "a string")
	var list listValue
	fs.Var(&list, "hosts", "hosts")
	note := fs.String("note", "", "comma-separated words, taken as one string")
	path := writeConfig(t, "h2c: true\nworkers: 8\nbytes: 0x10\nratio: 1e3\nwait: 1m30s\nname: \"yes\"\nhosts: [a, b]\nnote: a,b\n")
	if err := fs.Parse([]string{"--config", path, "--ratio", "0.5"}); err != nil {
		t.Fatal(err)
	}
	settings, err := applyConfigSources(fs, envOf(map[string]string{"HERALD_WORKERS": "9"}))
	if err != nil {
		t.Fatal(err)
	}
	if !*on || *n != 9 || *big != 16 || *ratio != 0.5 || *d != 90*time.Second || *name != "yes" || list != "a,b" || *note != "a,b" {
		t.Errorf("got h2c %v workers %d bytes %d ratio %v wait %v name %q hosts %q note %q", *on, *n, *big, *ratio, *d, *name, list, *note)
	}
	var out strings.Builder
	if err := printConfig(&out, settings); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"h2c: true ", "workers: 9 ", "bytes: 16 ", "ratio: 0.5 ", "wait: 1m30s ", "name: yes ", "hosts: [a, b] ", "note: a,b ",
		"# env HERALD_WORKERS\n", "# flag\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("printed configuration lacks %q:\n%s", line, &out)
		}
	}

	for content, want := range map[string]string{
		"h2c: yes\n":      `invalid value "yes" for h2c`, // YAML 1.2: a string, which a bool flag refuses
		"workers: -1\n":   `invalid value "-1" for workers`,
		"hosts: {a: 1}\n": "hosts: want a value, not a nested mapping",
		"note: [a, b]\n":  "note: want a single value, not a list",
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.String(configFlag, "", "")
		fs.Bool("h2c", false, "")
		fs.Uint("workers", 1, "")
		fs.Var(new(listValue), "hosts", "")
		fs.String("note", "", "comma-separated words, taken as one string")
		if err := fs.Parse([]string{"--config", writeConfig(t, content)}); err != nil {
			t.Fatal(err)
		}
		if _, err := applyConfigSources(fs, envOf(nil)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", content, err, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"history-size", "history-size", 0},
		{"hisotry-size", "history-size", 2}, {"history-sizes", "history-size", 1}, {"kitten", "sitting", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestMaskURLPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"memory":                                                   "memory",
		"redis://127.0.0.1:6379/0":                                 "redis://127.0.0.1:6379/0",
		"redis://:s3cret@127.0.0.1:6379/0":                         "redis://:****@127.0.0.1:6379/0",
		"rediss://app:s3cret@r:6380/1?prefix=h":                    "rediss://app:****@r:6380/1?prefix=h",
		"nats://u:s3cret@a:4222,nats://b:4222":                     "nats://u:****@a:4222,nats://b:4222",
		"nats://a:4222,u:s3cret@b:4222?stream=S":                   "nats://a:4222,u:****@b:4222?stream=S",
		"nats://s3cret@a:4222":                                     "nats://****@a:4222", // a token
		"tls://u:p%40ss@a:4222":                                    "tls://u:****@a:4222",
		"nats://u:p@ss@a:4222":                                     "nats://u:****@a:4222", // the last @ ends the userinfo
		"billing.=http://u:s3cret@billing/a,http://app/a?mail=x@y": "billing.=http://u:****@billing/a,http://app/a?mail=x@y",
	} {
		if got := maskURLPasswords(in); got != want {
			t.Errorf("maskURLPasswords(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaskSources(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://postgres@127.0.0.1:5432/app?table=herald_outbox":   "postgres://****@127.0.0.1:5432/app?table=herald_outbox",
		"postgres://app:s3cret@h1,h2/db?table=t postgres://b:pw2@h/db": "postgres://app:****@h1,h2/db?table=t postgres://b:****@h/db",
		"postgres://app@h/db?password=s3cret&table=t":                  "postgres://****@h/db?password=****&table=t",
	} {
		if got := maskSources(in); got != want {
			t.Errorf("maskSources(%q) = %q, want %q", in, got, want)
		}
	}
}

// Secrets of the configuration printed in the tests below.
const (
	testJWTSecret   = "jwt-0123456789abcdef0123456789ab"
	testAPIKey      = "api-key-value-0123"
	testRedisPass   = "redis-pass"
	testNATSPass    = "nats-pass"
	testNATSToken   = "nats-token"
	testUpstreamPwd = "upstream-pass"
)

func TestConfigPrintMasksSecrets(t *testing.T) {
	for _, broker := range []string{
		"redis://:" + testRedisPass + "@127.0.0.1:6379/0?prefix=h",
		"nats://app:" + testNATSPass + "@127.0.0.1:4222,nats://" + testNATSToken + "@127.0.0.2:4222?stream=S",
	} {
		var out strings.Builder
		err := runConfig([]string{"print", "--broker", broker, "--auth", "jwt",
			"--jwt-secret", testJWTSecret, "--api-key", testAPIKey, "--jwt-jwks-url", "https://idp:" + testUpstreamPwd + "@id.example.com/jwks",
			"--action-upstream", "billing.=https://bill:" + testUpstreamPwd + "@billing.internal/actions,http://app.internal/actions",
		}, envOf(nil), &out)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{testJWTSecret, testAPIKey, testRedisPass, testNATSPass, testNATSToken, testUpstreamPwd} {
			if strings.Contains(out.String(), secret) {
				t.Errorf("the printed configuration shows the secret %q:\n%s", secret, &out)
			}
		}
		for _, line := range []string{
			"jwt-secret: '****'", "api-key: '****'", "jwt-jwks-url: https://idp:****@id.example.com/jwks",
			"action-upstream: ['billing.=https://bill:****@billing.internal/actions', 'http://app.internal/actions']",
			"broker: " + maskURLPasswords(broker),
		} {
			if !strings.Contains(out.String(), line+" ") {
				t.Errorf("the printed configuration lacks %q:\n%s", line, &out)
			}
		}
	}
}

// TestConfigPrintRoundTrip prints a configuration made of a file, the
// environment and flags, reads the output back with --config alone, and
// checks that it gives the same configuration but for the masked secrets.
func TestConfigPrintRoundTrip(t *testing.T) {
	file := writeConfig(t, `
history-size: 20000
broker: redis://:`+testRedisPass+`@127.0.0.1:6379/0?prefix=rt
allowed-origins: [app.example.com, "*.example.org"]
cors-origins: [https://app.example.com]
auth: jwt
jwt-secret: `+testJWTSecret+`
public-subscribe: [news.>]
action-upstream: [billing.=http://u:`+testUpstreamPwd+`@billing/a, "http://app/a?x=1"]
`)
	env := map[string]string{"HERALD_HEARTBEAT": "7s", "HERALD_LOG_LEVEL": "warn", "HERALD_API_KEY": testAPIKey, "HERALD_JWT_ISSUER": "https://id.example.com"}
	args := []string{"--config", file, "--rate-publish", "12.5", "--history-ttl", "90m", "--log-format", "json", "--addr", "127.0.0.1:0"}

	var printed strings.Builder
	if err := runConfig(append([]string{"print"}, args...), envOf(env), &printed); err != nil {
		t.Fatal(err)
	}
	again, err := parseServeFlags([]string{"--config", writeConfig(t, printed.String())}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatalf("the printed configuration does not load: %v\n%s", err, &printed)
	}
	// What the original gives with its secrets replaced as printed.
	env["HERALD_API_KEY"] = masked
	want, err := parseServeFlags(append(args,
		"--jwt-secret", masked,
		"--broker", "redis://:"+masked+"@127.0.0.1:6379/0?prefix=rt",
		"--action-upstream", "billing.=http://u:"+masked+"@billing/a,http://app/a?x=1",
	), envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if configString(again) != configString(want) {
		t.Errorf("read back:\n%s\nwant:\n%s\nprinted:\n%s", configString(again), configString(want), &printed)
	}
	for _, s := range again.settings {
		if s.name != configFlag && s.source != fromFile {
			t.Errorf("%s read back from %s, want file: the printed configuration lacks it", s.name, s.source)
		}
	}

	// The defaults, printed and read back, are the defaults.
	printed.Reset()
	if err := runConfig([]string{"print"}, envOf(nil), &printed); err != nil {
		t.Fatal(err)
	}
	defaults, _ := parseServeFlags(nil, envOf(nil), io.Discard)
	again, err = parseServeFlags([]string{"--config", writeConfig(t, printed.String())}, envOf(nil), io.Discard)
	if err != nil || configString(again) != configString(defaults) {
		t.Errorf("defaults read back: %v\n%s\nwant\n%s", err, configString(again), configString(defaults))
	}
}

func TestConfigCommand(t *testing.T) {
	okFile := writeConfig(t, `history-size: 500
# Nothing listens on these ports: check must not connect.
broker: nats://127.0.0.1:1?stream=CHECK
auth: jwt
jwt-secret: 0123456789abcdef0123456789abcdef
`)
	redisFile := writeConfig(t, "broker: redis://127.0.0.1:1/0\n")
	var jwksFetches atomic.Int64
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jwksFetches.Add(1)
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	defer jwks.Close()
	jwksFile := writeConfig(t, "auth: jwt\njwt-jwks-url: "+jwks.URL+"/jwks\n")
	runCommands(t, []commandCase{
		{"check ok", []string{"config", "check", okFile}, 0, okFile + ": ok\n", ""},
		{"check ok with redis", []string{"config", "check", redisFile}, 0, redisFile + ": ok\n", ""},
		{"check unknown key", []string{"config", "check", writeConfig(t, "shards: 1\nhistory-sise: 5\n")}, 2, "",
			`herald.yaml:2: unknown key "history-sise" (did you mean "history-size"?)`},
		{"check validation", []string{"config", "check", writeConfig(t, "queue-bytes: 0\n")}, 2, "", "--queue-bytes must be positive"},
		{"check short JWT secret", []string{"config", "check", writeConfig(t, "auth: jwt\njwt-secret: short\n")}, 2, "", "at least 32 bytes"},
		{"check JWKS", []string{"config", "check", jwksFile}, 0, jwksFile + ": ok\n", ""},
		{"check JWKS over plain HTTP to another host", []string{"config", "check", writeConfig(t, "auth: jwt\njwt-jwks-url: http://id.example.com/jwks\n")}, 2, "", "--jwt-jwks-url"},
		{"check missing key file", []string{"config", "check", writeConfig(t, "auth: jwt\njwt-public-key: /nonexistent.pem\n")}, 2, "", "--jwt-public-key"},
		{"check bad redis URL", []string{"config", "check", writeConfig(t, "broker: redis://127.0.0.1:6379/notadb\n")}, 2, "", "--broker"},
		{"check bad NATS option", []string{"config", "check", writeConfig(t, "broker: nats://127.0.0.1:4222?storage=disk\n")}, 2, "", "storage must be file or memory"},
		{"check missing file", []string{"config", "check", "/nonexistent/herald.yaml"}, 2, "", "/nonexistent/herald.yaml"},
		{"check without a file", []string{"config", "check"}, 2, "", "takes one file"},
		{"check two files", []string{"config", "check", okFile, okFile}, 2, "", "takes one file"},
		{"check an empty name", []string{"config", "check", ""}, 2, "", "takes one file"},
		{"check -h", []string{"config", "check", "-h"}, 0, "herald config check FILE", ""},
		{"config alone", []string{"config"}, 2, "", "config needs a command"},
		{"config -h", []string{"config", "-h"}, 0, "herald config print", ""},
		{"config unknown", []string{"config", "show"}, 2, "", `unknown config command "show"`},
		{"print", []string{"config", "print", "--shards", "3"}, 0, "shards: 3", ""},
		{"print -h", []string{"config", "print", "-h"}, 0, "HERALD_HISTORY_SIZE", ""},
		{"print bad flag", []string{"config", "print", "--shards", "-3"}, 2, "", "--shards must not be negative"},
		{"help lists config", []string{"help"}, 0, "config    print the configuration", ""},
	})
	if n := jwksFetches.Load(); n != 0 {
		t.Errorf("config check fetched the JWKS %d times; it must connect nothing", n)
	}
}

// TestServeConfigFile runs a server whose settings come from --config and
// sees them at work: the SSE retry: line, the history's size, the log's
// format.
func TestServeConfigFile(t *testing.T) {
	in := startServe(t, "--config", writeConfig(t, `addr: 127.0.0.1:0
sse-retry: 1500ms
history-size: 2
log-format: json
`))
	for _, d := range []string{"1", "2", "3"} {
		if status, body := in.Post(t, "/v1/publish", `{"topic":"t","data":`+d+`}`); status != http.StatusOK {
			t.Fatalf("publish: status %d, body %s", status, body)
		}
	}
	if got := strings.Join(in.HistoryData(t, "t"), ","); got != "2,3" {
		t.Errorf("with history-size: 2, history = %s, want 2,3", got)
	}
	if !strings.Contains(in.Logs.String(), `"msg":"listening"`) {
		t.Errorf("log-format: json not applied:\n%s", in.Logs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v1/events?topic=t", nil)
	resp, err := in.Client.Transport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET /v1/events: %v", err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "retry: 1500\n" {
		t.Errorf("first line %q, %v; want retry: 1500 from sse-retry: 1500ms", line, err)
	}
}
