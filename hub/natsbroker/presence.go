package natsbroker

import (
	"context"

	"github.com/heraldpush/herald/hub"
)

// ChangePresence implements hub.Broker. The NATS broker keeps no members:
// JetStream 2.9 cannot record a membership in the same atomic step as the
// append, so a snapshot would not be exact at a position (docs/design.md).
func (b *Broker) ChangePresence(context.Context, []hub.PresenceChange) ([]*hub.Message, error) {
	return nil, hub.ErrPresenceUnsupported
}

// Presence implements hub.Broker: hub.ErrPresenceUnsupported (see ChangePresence).
func (b *Broker) Presence(context.Context, string) (hub.PresenceSnapshot, error) {
	return hub.PresenceSnapshot{}, hub.ErrPresenceUnsupported
}
