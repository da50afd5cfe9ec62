package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestServeActionFlags(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	c, err := parseServeFlags([]string{"--action-workers", "4"}, env(map[string]string{
		"HERALD_ACTION_WORKERS":      "3",
		"HERALD_ACTION_QUEUE":        "7",
		"HERALD_ACTION_TTL":          "5m",
		"HERALD_ACTION_TIMEOUT":      "2s",
		"HERALD_ACTION_MAX_ATTEMPTS": "2",
		"HERALD_ACTION_UPSTREAM":     " billing.=http://billing/actions , http://app/actions?x=1&y=2,",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.actionWorkers != 4 || c.actionQueue != 7 || c.actionTTL != 5*time.Minute ||
		c.actionTimeout != 2*time.Second || c.actionMaxAttempts != 2 {
		t.Errorf("workers %d (flag), queue %d, ttl %v, timeout %v, attempts %d: want 4, 7, 5m, 2s, 2",
			c.actionWorkers, c.actionQueue, c.actionTTL, c.actionTimeout, c.actionMaxAttempts)
	}
	want := []upstreamRoute{{"billing.", "http://billing/actions"}, {"", "http://app/actions?x=1&y=2"}}
	if fmt.Sprint(c.actionUpstream) != fmt.Sprint(want) {
		t.Errorf("upstream routes %+v, want %+v", c.actionUpstream, want)
	}

	for in, want := range map[string][]upstreamRoute{
		"":                    nil,
		" , ":                 nil,
		"https://app/actions": {{"", "https://app/actions"}},
		"todo.add=http://a/x,todo.*=http://b/y,http://c/z?q=a=b": {
			{"todo.add", "http://a/x"}, {"todo.*", "http://b/y"}, {"", "http://c/z?q=a=b"},
		},
		"a:b-c_d=http://127.0.0.1:9000/": {{"a:b-c_d", "http://127.0.0.1:9000/"}},
	} {
		got, err := parseUpstream(in)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestServeBadActionFlags(t *testing.T) {
	cases := []badServeCase{
		{"zero workers", []string{"--action-workers", "0"}, nil, "--action-workers must be positive"},
		{"negative queue", []string{"--action-queue=-1"}, nil, "--action-queue must be positive"},
		{"zero ttl", []string{"--action-ttl", "0s"}, nil, "--action-ttl must be positive"},
		{"negative timeout", []string{"--action-timeout", "-1s"}, nil, "--action-timeout must be positive"},
		{"zero attempts", []string{"--action-max-attempts", "0"}, nil, "--action-max-attempts must be positive"},
		{"attempts not a number", []string{"--action-max-attempts", "many"}, nil, "invalid value"},
		{"bad timeout", []string{"--action-timeout", "soon"}, nil, "invalid value"},
		{"workers from env", nil, map[string]string{"HERALD_ACTION_WORKERS": "lots"}, "HERALD_ACTION_WORKERS"},
		{"queue from env", nil, map[string]string{"HERALD_ACTION_QUEUE": "0"}, "--action-queue must be positive"},
		{"upstream not a URL", []string{"--action-upstream", "upstream"}, nil, "must be absolute"},
		{"upstream from env", nil, map[string]string{"HERALD_ACTION_UPSTREAM": "garbage"}, "--action-upstream entry"},
		{"upstream scheme", []string{"--action-upstream", "ftp://app/actions"}, nil, "http:// or https://"},
		{"upstream without host", []string{"--action-upstream", "http:///actions"}, nil, "must be absolute"},
		{"empty type", []string{"--action-upstream", "=http://a/x"}, nil, "is empty"},
		{"star type", []string{"--action-upstream", "*=http://a/x"}, nil, "is empty"},
		{"reserved type", []string{"--action-upstream", "herald.=http://a/x"}, nil, "reserved"},
		{"reserved type in capitals", []string{"--action-upstream", "HERALD.reset=http://a/x"}, nil, "reserved"},
		{"reserved namespace by prefix", []string{"--action-upstream", "Herald*=http://a/x"}, nil, "reserved"},
		{"bad type", []string{"--action-upstream", "todo add=http://a/x"}, nil, `byte ' ' not allowed`},
		{"bad prefix", []string{"--action-upstream", "todo/*=http://a/x"}, nil, `byte '/' not allowed`},
		{"long type", []string{"--action-upstream", strings.Repeat("t", 65) + "=http://a/x"}, nil, "1 to 64 bytes"},
		{"the reserved namespace's name", []string{"--action-upstream", "herald=http://a/x"}, nil, "reserved"},
		{"type without URL", []string{"--action-upstream", "todo.="}, nil, "must be absolute"},
		{"two fallbacks", []string{"--action-upstream", "http://a/x,http://b/y"}, nil, "more than one fallback"},
		{"same prefix twice", []string{"--action-upstream", "todo.=http://a/x,todo.*=http://b/y"}, nil, "twice"},
	}
	runBadServe(t, cases)
}
