package redisbroker

import (
	"context"

	"github.com/heraldpush/herald/hub"
)

// ChangePresence implements hub.Broker.
func (b *Broker) ChangePresence(context.Context, []hub.PresenceChange) ([]*hub.Message, error) {
	return nil, hub.ErrPresenceUnsupported
}

// Presence implements hub.Broker.
func (b *Broker) Presence(context.Context, string) (hub.PresenceSnapshot, error) {
	return hub.PresenceSnapshot{}, hub.ErrPresenceUnsupported
}
