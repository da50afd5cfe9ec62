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

// topic is the keyed topic that holds the list: one key per to-do (its ID),
// whose latest event carries the to-do, {"id","title"}, as its data, or
// null once the to-do is deleted. Herald keeps the latest event of each key
// (the topic's state), so a page that subscribes gets the whole list from
// Herald and then every change, with nothing in between to miss.
const topic = "todo.list"

// eventType is the type of the keyed events; the action results that
// Herald publishes to the same topic have their own types.
const eventType = "todo"

// heraldAPI is the part of Herald's HTTP API the backend uses: publishing
// the list's changes and reading the list back. It is safe for concurrent
// use once set up.
type heraldAPI struct {
	base   string // Herald's URL
	apiKey string // sent as X-API-Key when Herald requires one
	client *http.Client
}

func newHeraldAPI(base, apiKey string) *heraldAPI {
	return &heraldAPI{base: base, apiKey: apiKey, client: &http.Client{Timeout: 5 * time.Second}}
}

func key(id int) string { return strconv.Itoa(id) }

// put publishes a to-do as the latest value of its key.
func (h *heraldAPI) put(ctx context.Context, t todo) error {
	return h.publish(ctx, key(t.ID), t)
}

// remove publishes null for the to-do's key, which removes it from the
// state; subscribers receive it as an event like any other.
func (h *heraldAPI) remove(ctx context.Context, id int) error {
	return h.publish(ctx, key(id), nil)
}

func (h *heraldAPI) publish(ctx context.Context, key string, data any) error {
	body, err := json.Marshal(map[string]any{"topic": topic, "type": eventType, "key": key, "data": data})
	if err != nil {
		return fmt.Errorf("failed to encode the event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/v1/publish", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("failed to publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	_, err = h.do(req)
	return err
}

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
	if h.apiKey != "" {
		req.Header.Set("X-API-Key", h.apiKey)
	}
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
