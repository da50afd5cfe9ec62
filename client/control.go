package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Target names the connections a control call acts on: every connection
// of a user (a token's sub), or one connection (its ID: Subscription's
// ClientID, the Herald-Client header). Exactly one is set.
type Target struct {
	User   string `json:"user,omitempty"`
	Client string `json:"client,omitempty"`
}

// Disconnect closes the target's connections, cluster-wide (POST
// /v1/disconnect): a WebSocket with close code 4001, an SSE stream ended.
// It needs the client's APIKey or an admin token. It returns how many
// connections the node that answered closed; the other nodes close theirs
// without counting them.
func (c *Client) Disconnect(ctx context.Context, t Target) (int, error) {
	return c.control(ctx, "/v1/disconnect", t, nil)
}

// Unsubscribe removes the patterns (as the connections wrote them) from
// the target's connections, cluster-wide (POST /v1/unsubscribe). It needs
// what Disconnect needs and returns what it returns.
func (c *Client) Unsubscribe(ctx context.Context, t Target, patterns []string) (int, error) {
	if len(patterns) == 0 {
		return 0, errors.New("failed to unsubscribe: no patterns")
	}
	return c.control(ctx, "/v1/unsubscribe", t, patterns)
}

func (c *Client) control(ctx context.Context, path string, t Target, patterns []string) (int, error) {
	if (t.User == "") == (t.Client == "") {
		return 0, fmt.Errorf("failed to call %s: give a user or a client, one of them", path)
	}
	body, err := json.Marshal(struct {
		Target
		Topics []string `json:"topics,omitempty"`
	}{t, patterns})
	if err != nil {
		return 0, fmt.Errorf("failed to encode %s: %w", path, err)
	}
	_, out, err := c.do(ctx, http.MethodPost, path, body, nil)
	if err != nil {
		return 0, err
	}
	var res struct {
		Connections *int `json:"connections"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Connections == nil {
		return 0, fmt.Errorf("failed to read the answer to %s: %.200q is not {\"connections\":N}", path, out)
	}
	return *res.Connections, nil
}
