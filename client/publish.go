package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// Draft is an event to publish.
type Draft struct {
	Topic string
	Type  string // "" for the server's default, "message"
	Key   string // "" for none: a keyed event is its key's latest value (the topic's state)
	// Data is encoded with encoding/json; a json.RawMessage goes as it is
	// (it must be valid JSON). Nil is JSON null.
	Data any
}

// MarshalJSON encodes the draft as the HTTP API reads it.
func (d Draft) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Topic string `json:"topic"`
		Type  string `json:"type,omitempty"`
		Key   string `json:"key,omitempty"`
		Data  any    `json:"data"`
	}{d.Topic, d.Type, d.Key, d.Data})
}

// PublishOption adds to a Publish.
type PublishOption func(*Draft)

// WithKey publishes the event with a key (see Draft.Key).
func WithKey(key string) PublishOption { return func(d *Draft) { d.Key = key } }

// Publish publishes one event (POST /v1/publish) and returns its cursor.
// typ "" is the server's default type; data is encoded as Draft.Data is.
func (c *Client) Publish(ctx context.Context, topic, typ string, data any, opts ...PublishOption) (string, error) {
	d := Draft{Topic: topic, Type: typ, Data: data}
	for _, o := range opts {
		o(&d)
	}
	body, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("failed to encode event: %w", err)
	}
	_, b, err := c.do(ctx, http.MethodPost, "/v1/publish", body, nil)
	if err != nil {
		return "", fmt.Errorf("failed to publish: %w", err)
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("failed to publish: unexpected answer %.200q", b)
	}
	return r.ID, nil
}

// PublishBatch publishes events in one request, all or nothing, in order,
// and returns their cursors in the same order.
func (c *Client) PublishBatch(ctx context.Context, events []Draft) ([]string, error) {
	if len(events) == 0 {
		return nil, nil
	}
	body, err := json.Marshal(struct {
		Events []Draft `json:"events"`
	}{events})
	if err != nil {
		return nil, fmt.Errorf("failed to encode events: %w", err)
	}
	_, b, err := c.do(ctx, http.MethodPost, "/v1/publish", body, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to publish: %w", err)
	}
	var r struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.IDs) != len(events) {
		return nil, fmt.Errorf("failed to publish: unexpected answer %.200q", b)
	}
	return r.IDs, nil
}
