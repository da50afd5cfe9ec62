package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The control API's operations (Control.Op).
const (
	ControlDisconnect  = "disconnect"
	ControlUnsubscribe = "unsubscribe"
)

// Bounds of one control operation. A control message crosses the broker to
// every node, so it is small: MaxControlBytes holds the largest valid one.
const (
	MaxControlUser   = 1024 // bytes of Control.User
	MaxControlClient = 128  // bytes of Control.Client
	MaxControlTopics = 256  // patterns of one unsubscribe (as many as one SSE stream may hold)
	MaxControlBytes  = 128 << 10
)

// ErrInvalidControl is matched (errors.Is) by every refusal of a control
// operation by ValidateControl.
var ErrInvalidControl = errors.New("invalid control request")

// Control is one operation of the control API: disconnect, or unsubscribe
// from Topics, every connection of User (a token's sub) or the one
// connection named Client (a ConnID). Exactly one of User and Client is set.
type Control struct {
	Op     string   `json:"op"`
	User   string   `json:"user,omitempty"`
	Client string   `json:"client,omitempty"`
	Topics []string `json:"topics,omitempty"` // patterns as the connections wrote them (unsubscribe)
}

// ValidateControl checks c. Errors wrap ErrInvalidControl, or
// ErrInvalidPattern for a topic that is not a pattern.
func ValidateControl(c Control) error {
	switch {
	case c.Op != ControlDisconnect && c.Op != ControlUnsubscribe:
		return fmt.Errorf("%w: unknown operation %q", ErrInvalidControl, c.Op)
	case (c.User == "") == (c.Client == ""):
		return fmt.Errorf(`%w: give exactly one of "user" and "client", not empty`, ErrInvalidControl)
	case len(c.User) > MaxControlUser:
		return fmt.Errorf(`%w: "user" is longer than %d bytes`, ErrInvalidControl, MaxControlUser)
	case len(c.Client) > MaxControlClient:
		return fmt.Errorf(`%w: "client" is longer than %d bytes`, ErrInvalidControl, MaxControlClient)
	case !utf8.ValidString(c.User) || !utf8.ValidString(c.Client):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidControl)
	}
	if c.Op == ControlDisconnect {
		if c.Topics != nil {
			return fmt.Errorf(`%w: a disconnect takes no "topics"`, ErrInvalidControl)
		}
		return nil
	}
	if len(c.Topics) == 0 || len(c.Topics) > MaxControlTopics {
		return fmt.Errorf(`%w: "topics" must hold 1 to %d patterns`, ErrInvalidControl, MaxControlTopics)
	}
	for _, t := range c.Topics {
		if _, err := ParsePattern(t); err != nil {
			return err
		}
	}
	return nil
}

// ControlBroker is implemented by brokers that several nodes share and
// that carry the control API's operations to every node: an operation
// acts on the connections of the whole cluster, and each node knows only
// its own.
//
// Delivery is at most once and best effort, as Centrifugo's: a node that
// cannot reach the broker when a message is sent never sees it. Messages
// are opaque to the broker and at most MaxControlBytes.
type ControlBroker interface {
	// OnControl registers, before Start, the function the broker calls
	// with each control message PublishControl sends from any node, this
	// one included, until Close: from one goroutine at a time, holding no
	// lock of its own. f must return promptly.
	OnControl(f func(msg []byte))
	// PublishControl sends msg to every node's OnControl function. When
	// it returns nil, every node connected to the broker has been sent
	// msg; a node that subscribes later does not get it. It returns within
	// a bound of its own whatever ctx. Failures wrap ErrUnavailable.
	PublishControl(ctx context.Context, msg []byte) error
}

// controlMsg is a control message between nodes: the operation and the
// node that applied it already.
type controlMsg struct {
	Control
	Origin string `json:"origin"`
}

// Control applies c to every matching connection of the cluster: on this
// node at once, and on the other nodes through the broker (ControlBroker;
// with any other broker this node is the cluster). It returns how many
// connections of this node it acted on: those it disconnected, or those
// that lost at least one of the subscriptions. The other nodes act when
// the message reaches them and report nothing back.
//
// Errors wrap ErrInvalidControl or ErrInvalidPattern (nothing was done),
// or ErrUnavailable: the broker could not carry the message, so only this
// node acted (the count says on how many).
func (h *Hub) Control(ctx context.Context, c Control) (int, error) {
	if err := ValidateControl(c); err != nil {
		return 0, err
	}
	if h.ctx.Err() != nil {
		return 0, ErrClosed
	}
	n := h.applyControl(c)
	cb, ok := h.broker.(ControlBroker)
	if !ok {
		return n, nil
	}
	msg, err := json.Marshal(controlMsg{Control: c, Origin: h.node})
	if err != nil {
		return n, fmt.Errorf("failed to encode a control message: %w", err)
	}
	if err := cb.PublishControl(ctx, msg); err != nil {
		if !errors.Is(err, ErrUnavailable) {
			err = Unavailable(err)
		}
		return n, fmt.Errorf("failed to send the control message to the other nodes: %w", err)
	}
	return n, nil
}

// onControl is the hub's OnControl function: it applies what other nodes
// sent. Its own messages it applied already (Control).
func (h *Hub) onControl(msg []byte) {
	var m controlMsg
	if len(msg) > MaxControlBytes {
		h.opts.Logger.Warn("hub: dropped an oversized control message", "bytes", len(msg))
		return
	}
	if err := json.Unmarshal(msg, &m); err != nil || ValidateControl(m.Control) != nil {
		h.opts.Logger.Warn("hub: dropped a control message it cannot read", "bytes", len(msg))
		return
	}
	if m.Origin == h.node {
		return
	}
	h.applyControl(m.Control)
}

// applyControl applies c to this node's connections and counts those it
// acted on.
func (h *Hub) applyControl(c Control) int {
	n := 0
	for _, cl := range h.controlled(c) {
		switch c.Op {
		case ControlDisconnect:
			if cl.failOnce(ErrDisconnected) {
				n++
			}
		case ControlUnsubscribe:
			if cl.unsubscribeControl(c.Topics) {
				n++
			}
		}
	}
	return n
}

// controlled returns this node's open clients that c names.
func (h *Hub) controlled(c Control) []*Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.User != "" {
		return slices.Clone(h.users[c.User])
	}
	num, ok := strings.CutPrefix(c.Client, h.node+"-")
	if !ok {
		return nil // another node's connection
	}
	id, err := strconv.ParseUint(num, 36, 64)
	if err != nil || strconv.FormatUint(id, 36) != num {
		return nil
	}
	if cl := h.clients[id]; cl != nil {
		return []*Client{cl}
	}
	return nil
}

// SetUser names the user the connection is of (its token's sub), by which
// the control API finds it. The first call wins: a connection's user does
// not change (a token refresh keeps the sub). "" does nothing.
func (c *Client) SetUser(user string) {
	if user == "" {
		return
	}
	h := c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.clients[c.id] != c {
		return // closed
	}
	if _, ok := h.userOf[c.id]; ok {
		return
	}
	h.userOf[c.id] = user
	h.users[user] = append(h.users[user], c)
}

// unnameLocked removes c from the user index. h.mu is held on entry.
func (h *Hub) unnameLocked(c *Client) {
	user, ok := h.userOf[c.id]
	if !ok {
		return
	}
	delete(h.userOf, c.id)
	cs := slices.DeleteFunc(h.users[user], func(o *Client) bool { return o == c })
	if len(cs) == 0 {
		delete(h.users, user)
	} else {
		h.users[user] = cs
	}
}

// failOnce fails the client with err and reports whether it was open.
func (c *Client) failOnce(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && c.failLocked(err)
}

// unsubscribeControl removes those of patterns the client subscribed to
// (as written), as Unsubscribe does, and queues the transport's
// Unsubscribed frame naming them. It reports whether it removed any.
func (c *Client) unsubscribeControl(patterns []string) bool {
	s := c.shardOf()
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.closed {
		return false
	}
	var gone []string
	for _, raw := range patterns {
		if sb := c.subs[raw]; sb != nil && !slices.Contains(gone, raw) {
			c.unsubscribeLocked(s, sb)
			gone = append(gone, raw)
		}
	}
	if len(gone) == 0 {
		return false
	}
	switch o := c.w.opts; {
	case o == nil:
		// Not served yet (an SSE stream whose response is on its way):
		// Serve queues the frame. Under c.mu, as Serve takes it.
		prev, _ := c.hub.unsubPending.Load(c)
		old, _ := prev.([]string)
		c.hub.unsubPending.Store(c, append(old, gone...))
	case o.Unsubscribed != nil:
		c.enqueueLocked(Item{Raw: o.Unsubscribed(gone)})
	}
	return true
}

// CheckControlMessage refuses a control message larger than
// MaxControlBytes: the one check every ControlBroker makes before it sends.
func CheckControlMessage(msg []byte) error {
	if len(msg) > MaxControlBytes {
		return fmt.Errorf("failed to send a control message of %d bytes: the limit is %d", len(msg), MaxControlBytes)
	}
	return nil
}
