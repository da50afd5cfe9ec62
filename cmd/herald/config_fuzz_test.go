package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfigFile loads arbitrary bytes as the --config file of serve. Any
// input must give a configuration or a usage error, never a panic; and a
// configuration, printed by "herald config print" and read back, must give
// itself again (with its secrets masked, as printed).
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"",
		"# only a comment\n",
		"---\n",
		"history-size: 20000\nbroker: redis://:pw@127.0.0.1:6379/0?prefix=h\nallowed-origins: [app.example.com, \"*.example.org\"]\nheartbeat: 30s\n",
		"broker: nats://u:pw@a:4222,tok@b:4222?stream=S&replicas=3\naction-upstream:\n  - billing.=http://u:pw@billing/actions\n  - http://app/actions\n",
		"auth: jwt\njwt-secret: \"0123456789abcdef0123456789abcdef\"\napi-key: k\npublic-subscribe: [news.>]\n",
		"rate-publish: 1e3\nws-message-rate: -1\nmax-body: 0x100000\nhistory-ttl: 0\nlog-level: debug\n",
		"cors-origins: [\"https://app.example.com/\", \"*\"]\nlog-format: json\n",
		"history-size: &n 5\nws-max-topics: *n\n",
		"auth: jwt\njwt-secret: 0123456789abcdef0123456789abcdef\njwt-audience: \"tab\\there\\nnewline\\0\"\n",
		// Invalid ones.
		"hisotry-size: 5\n",
		"config: x.yaml\n",
		"history-size: lots\n",
		"broker:\n  url: redis://x\n",
		"history-size: [1, 2]\n",
		"allowed-origins: [[a]]\n",
		"shards: 1\nshards: 2\n",
		"- a\n- b\n",
		"a: 1\n---\nb: 2\n",
		"history-size: 1\n  x: [\n",
		"? [a, b]\n: c\n",
		"api-key:\n",
		"<<: {shards: 2}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "herald.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := parseServeFlags([]string{"--config", path}, envOf(nil), io.Discard)
		if err != nil {
			if !errors.As(err, new(*usageError)) {
				t.Fatalf("%v is not a usage error", err)
			}
			return
		}
		var printed strings.Builder
		if err := printConfig(&printed, c.settings); err != nil {
			// Only a value that YAML cannot hold may fail, and one read
			// from YAML always can.
			t.Fatalf("print: %v", err)
		}
		reprint := filepath.Join(dir, "printed.yaml")
		if err := os.WriteFile(reprint, []byte(printed.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := parseServeFlags([]string{"--config", reprint}, envOf(nil), io.Discard)
		if err != nil {
			t.Fatalf("the printed configuration does not load: %v\n%s", err, &printed)
		}
		if got, want := maskedConfig(again), maskedConfig(c); got != want {
			t.Fatalf("read back:\n%s\nwant:\n%s\nprinted:\n%s", got, want, &printed)
		}
		var printedAgain strings.Builder
		if err := printConfig(&printedAgain, again.settings); err != nil {
			t.Fatalf("print again: %v", err)
		}
		if got, want := configValues(printedAgain.String()), configValues(printed.String()); got != want {
			t.Fatalf("printed again:\n%s\nfirst printed:\n%s", got, want)
		}
	})
}

// maskedConfig is c as configString gives it, with its secrets masked as
// "herald config print" masks them.
func maskedConfig(c serveConfig) string {
	c.jwtSecret = maskAll(c.jwtSecret)
	c.apiKey = maskAll(c.apiKey)
	c.broker = maskURLPasswords(c.broker)
	routes := make([]upstreamRoute, len(c.actionUpstream))
	for i, r := range c.actionUpstream {
		routes[i] = upstreamRoute{typ: r.typ, url: maskURLPasswords(r.url)}
	}
	c.actionUpstream = routes
	return configString(c)
}

// configValues is the printed configuration without its comments: the
// heading, which names the file, and the sources after each value.
func configValues(printed string) string {
	var b strings.Builder
	for _, line := range strings.Split(printed, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndex(line, "  # "); i >= 0 {
			line = strings.TrimRight(line[:i], " ")
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
