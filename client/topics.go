package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// State is the state of a keyed topic: the latest event of each key.
type State struct {
	Cursor string  // the position the state is exact at: Since it to follow every change after it
	Events []Event // oldest first
}

// State reads the state of one topic (GET /v1/topics/{topic}/state).
func (c *Client) State(ctx context.Context, topic string) (*State, error) {
	b, err := c.topicResource(ctx, topic, "state")
	if err != nil {
		return nil, err
	}
	var st struct {
		ID     string            `json:"id"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.ID == "" {
		return nil, fmt.Errorf("failed to read the state of %s: unexpected answer %.200q", topic, b)
	}
	out := &State{Cursor: st.ID, Events: make([]Event, len(st.Events))}
	for i, raw := range st.Events {
		if len(raw) < 2 || raw[0] != '{' {
			return nil, fmt.Errorf("failed to read the state of %s: event %.100q", topic, raw)
		}
		e, err := parseEnvelope(raw[1:])
		if err != nil || e.delta != nil {
			return nil, fmt.Errorf("failed to read the state of %s: event %.100q", topic, raw)
		}
		out.Events[i] = e.Event
	}
	return out, nil
}

// Presence is who is in a topic's presence.
type Presence struct {
	Cursor  string   // the position the list is exact at: Since it with PresenceEvents to follow every change
	Members []Member // in the order they joined
	Clients int      // members: connections
	Users   int      // distinct users among them
}

// Member is one connection in a topic's presence.
type Member struct {
	Client string          // the connection's ID (Subscription.ClientID)
	User   string          // "" for none
	Info   json.RawMessage // nil for none
	Raw    json.RawMessage // the member object as the server sent it
}

// Presence reads the members of one topic (GET /v1/topics/{topic}/presence).
func (c *Client) Presence(ctx context.Context, topic string) (*Presence, error) {
	b, err := c.topicResource(ctx, topic, "presence")
	if err != nil {
		return nil, err
	}
	var p struct {
		ID      string            `json:"id"`
		Members []json.RawMessage `json:"members"`
		Clients int               `json:"clients"`
		Users   int               `json:"users"`
	}
	if err := json.Unmarshal(b, &p); err != nil || p.ID == "" {
		return nil, fmt.Errorf("failed to read the presence of %s: unexpected answer %.200q", topic, b)
	}
	out := &Presence{Cursor: p.ID, Members: make([]Member, len(p.Members)), Clients: p.Clients, Users: p.Users}
	for i, raw := range p.Members {
		var m struct {
			Client string          `json:"client"`
			User   *string         `json:"user"`
			Info   json.RawMessage `json:"info"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("failed to read the presence of %s: member %.100q", topic, raw)
		}
		out.Members[i] = Member{Client: m.Client, Info: m.Info, Raw: raw}
		if m.User != nil {
			out.Members[i].User = *m.User
		}
		if string(m.Info) == "null" {
			out.Members[i].Info = nil
		}
	}
	return out, nil
}

// topicResource reads GET /v1/topics/{topic}/NAME.
func (c *Client) topicResource(ctx context.Context, topic, name string) ([]byte, error) {
	_, b, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/"+name, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to read the %s of %s: %w", name, topic, err)
	}
	return b, nil
}
