package client

import (
	"bytes"
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
		ID     string          `json:"id"`
		Events json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.ID == "" {
		return nil, fmt.Errorf("failed to read the state of %s: unexpected answer %.200q", topic, b)
	}
	out := &State{Cursor: st.ID, Events: []Event{}}
	err = eachObject(st.Events, func(raw []byte) error {
		e, err := parseOwned(raw[1:])
		if err != nil || e.delta != nil {
			return fmt.Errorf("event %.100q", raw)
		}
		out.Events = append(out.Events, e.Event)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read the state of %s: %w", topic, err)
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
		ID      string          `json:"id"`
		Members json.RawMessage `json:"members"`
		Clients int             `json:"clients"`
		Users   int             `json:"users"`
	}
	if err := json.Unmarshal(b, &p); err != nil || p.ID == "" {
		return nil, fmt.Errorf("failed to read the presence of %s: unexpected answer %.200q", topic, b)
	}
	out := &Presence{Cursor: p.ID, Members: []Member{}, Clients: p.Clients, Users: p.Users}
	err = eachObject(p.Members, func(raw []byte) error {
		var m struct {
			Client string          `json:"client"`
			User   *string         `json:"user"`
			Info   json.RawMessage `json:"info"`
		}
		if err := json.Unmarshal(raw, &m); err != nil || m.Client == "" {
			return fmt.Errorf("member %.100q", raw)
		}
		mb := Member{Client: m.Client, Info: m.Info, Raw: raw}
		if m.User != nil {
			mb.User = *m.User
		}
		if string(m.Info) == "null" {
			mb.Info = nil
		}
		out.Members = append(out.Members, mb)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read the presence of %s: %w", topic, err)
	}
	return out, nil
}

// maxItems bounds the events of a state and the members of a presence
// that the client reads. The server keeps 10,000 of each per topic by
// default; real ones take 50 bytes and more, so that more than this
// would not fit in an answer (maxAnswer) anyway. Without it, an answer of
// tiny elements ("[{},{},…]") would take gigabytes as a slice of Events.
const maxItems = 1 << 20

// eachObject calls f with each element of the JSON array arr, an object
// of its own bytes, and fails on another element or past maxItems of them.
// A missing or null array has none.
func eachObject(arr json.RawMessage, f func(raw []byte) error) error {
	if len(arr) == 0 || string(arr) == "null" {
		return nil
	}
	// One element at a time: the elements' count is checked before they
	// take memory.
	dec := json.NewDecoder(bytes.NewReader(arr))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return fmt.Errorf("unexpected list %.100q", arr)
	}
	for n := 0; dec.More(); n++ {
		if n == maxItems {
			return fmt.Errorf("more than %d elements", maxItems)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("failed to decode element %d: %w", n, err)
		}
		if raw[0] != '{' {
			return fmt.Errorf("element %d: %.100q is not an object", n, raw)
		}
		if err := f(raw); err != nil {
			return err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return fmt.Errorf("unexpected end of list %.100q", arr)
	}
	return nil
}

// topicResource reads GET /v1/topics/{topic}/NAME.
func (c *Client) topicResource(ctx context.Context, topic, name string) ([]byte, error) {
	_, b, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/"+name, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to read the %s of %s: %w", name, topic, err)
	}
	return b, nil
}
