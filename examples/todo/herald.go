package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// topic is the keyed topic that holds Herald's copy of the list: one key
// per to-do (its ID), whose latest event carries the to-do,
// {"id","title"}, as its data, or null once the to-do is deleted. Herald keeps the latest event of each key
// (the topic's state), so a page that subscribes gets the whole list from
// Herald and then every change, with nothing in between to miss.
const topic = "todo.list"

// eventType is the type of the keyed events; the action results that
// Herald publishes to the same topic have their own types.
const eventType = "todo"

// heraldAPI is the part of Herald's HTTP API the backend uses: reading
// Herald's copy of the list. The list's changes reach Herald through the
// outbox (store.go), not this API. It is safe for concurrent use.
type heraldAPI struct {
	base   string // Herald's URL
	client *http.Client
}

func newHeraldAPI(base string) *heraldAPI {
	return &heraldAPI{base: base, client: &http.Client{Timeout: 5 * time.Second}}
}

func key(id int64) string { return strconv.FormatInt(id, 10) }

// state reads the list as Herald holds it: each key's latest data.
func (h *heraldAPI) state(ctx context.Context) (map[string]json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1/topics/"+url.PathEscape(topic)+"/state", nil)
	if err != nil {
		return nil, fmt.Errorf("failed to read the state: %w", err)
	}
	body, err := h.do(req)
	if err != nil {
		return nil, err
	}
	var snap struct {
		Events []struct {
			Key  string          `json:"key"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return nil, fmt.Errorf("failed to read the state: %w", err)
	}
	out := make(map[string]json.RawMessage, len(snap.Events))
	for _, e := range snap.Events {
		out[e.Key] = e.Data
	}
	return out, nil
}

// do sends a request and returns the body of a 2xx answer.
func (h *heraldAPI) do(req *http.Request) ([]byte, error) {
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to reach Herald: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("failed to read Herald's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("failed: %s %s: Herald answered %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}
