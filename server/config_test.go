package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

// TestValidatePositive checks each field whose 0 is its default: a
// negative value is a *ConfigError naming its flag, and 0 is valid.
func TestValidatePositive(t *testing.T) {
	for flag, set := range map[string]func(c *server.Config){
		"history-size":        func(c *server.Config) { c.HistorySize = -1 },
		"history-bytes":       func(c *server.Config) { c.HistoryBytes = -1 },
		"state-max-keys":      func(c *server.Config) { c.StateMaxKeys = -1 },
		"state-max-bytes":     func(c *server.Config) { c.StateMaxBytes = -1 },
		"queue-bytes":         func(c *server.Config) { c.QueueBytes = -1 },
		"heartbeat":           func(c *server.Config) { c.Heartbeat = -time.Second },
		"sse-retry":           func(c *server.Config) { c.SSERetry = -time.Second },
		"write-timeout":       func(c *server.Config) { c.WriteTimeout = -time.Second },
		"read-timeout":        func(c *server.Config) { c.ReadTimeout = -time.Second },
		"max-body":            func(c *server.Config) { c.MaxBody = -1 },
		"ws-read-limit":       func(c *server.Config) { c.WSReadLimit = -1 },
		"ws-ping-interval":    func(c *server.Config) { c.WSPingInterval = -time.Second },
		"ws-max-topics":       func(c *server.Config) { c.WSMaxTopics = -1 },
		"shutdown-timeout":    func(c *server.Config) { c.ShutdownTimeout = -time.Second },
		"action-workers":      func(c *server.Config) { c.ActionWorkers = -1 },
		"action-queue":        func(c *server.Config) { c.ActionQueue = -1 },
		"action-ttl":          func(c *server.Config) { c.ActionTTL = -time.Second },
		"action-max-finished": func(c *server.Config) { c.ActionMaxFinished = -1 },
		"action-max-bytes":    func(c *server.Config) { c.ActionMaxBytes = -1 },
		"action-timeout":      func(c *server.Config) { c.ActionTimeout = -time.Second },
		"action-max-attempts": func(c *server.Config) { c.ActionMaxAttempts = -1 },
	} {
		var c server.Config
		set(&c)
		err := c.Validate()
		if !server.IsConfigError(err) || !strings.Contains(err.Error(), "--"+flag+" must be positive") {
			t.Errorf("%s negative: Validate returned %v, want a *ConfigError saying --%s must be positive", flag, err, flag)
		}
	}
	if err := (server.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config, every field its default: %v", err)
	}
	// Where a negative value means no limit, it is valid.
	if err := (server.Config{HistoryTTL: -1, MaxConns: -1, WSMessageRate: -1}).Validate(); err != nil {
		t.Errorf("no history age limit, no connection limit, no message rate: %v", err)
	}
}
