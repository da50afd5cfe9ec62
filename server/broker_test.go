package server

import (
	"errors"
	"strings"
	"testing"
)

func TestNATSBrokerURL(t *testing.T) {
	servers, o, err := natsBrokerURL("nats://u:p@a:4222,b:4222?stream=S&subjects=x.y&replicas=3&storage=memory")
	if err != nil || servers != "nats://u:p@a:4222,b:4222" || o.Stream != "S" || o.Subjects != "x.y" || o.Replicas != 3 || !o.Memory {
		t.Fatalf("got %q %+v %v", servers, o, err)
	}
	servers, o, err = natsBrokerURL("nats://a:4222")
	if err != nil || servers != "nats://a:4222" || o.Stream != "" || o.Replicas != 0 || o.Memory {
		t.Fatalf("defaults: got %q %+v %v", servers, o, err)
	}
	for _, bad := range []string{
		"nats://a?replicas=0", "nats://a?replicas=x", "nats://a?replicas=6",
		"nats://a?storage=disk", "nats://a?prefix=x", "nats://a?%zz",
	} {
		if _, _, err := natsBrokerURL(bad); !errors.As(err, new(*ConfigError)) {
			t.Errorf("%s: %v, want a usage error", bad, err)
		}
	}
}

func TestRedactBroker(t *testing.T) {
	for in, want := range map[string]string{
		"memory":                               "memory",
		"redis://:secret@r:6379/0?prefix=h":    "redis://:xxxxx@r:6379/0?prefix=h",
		"nats://u:secret@a:4222,nats://b:4222": "nats://u:xxxxx@a:4222,nats://b:4222",
	} {
		got := redactBroker(in)
		if got != want || strings.Contains(got, "secret") {
			t.Errorf("redactBroker(%q) = %q, want %q", in, got, want)
		}
	}
}
