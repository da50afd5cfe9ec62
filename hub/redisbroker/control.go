package redisbroker

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// Control messages (hub.ControlBroker) go over Redis Pub/Sub, on the
// channel {prefix}:control, which every node of the log subscribes to:
// at most once, like Centrifugo's, and never stored.

// controlChannel is the Pub/Sub channel of the control messages.
func (b *Broker) controlChannel() string { return "{" + b.o.Prefix + "}:control" }

// OnControl implements hub.ControlBroker. Call it before Start.
func (b *Broker) OnControl(f func(msg []byte)) { b.control = f }

// OnSkip implements hub.SkipReporter. Call it before Start.
func (b *Broker) OnSkip(f func(next uint64)) { b.skipped = f }

// PublishControl implements hub.ControlBroker: one PUBLISH, which Redis
// has handed to every subscribed node's connection when it answers.
func (b *Broker) PublishControl(ctx context.Context, msg []byte) error {
	if b.closed.Load() {
		return hub.ErrClosed
	}
	if err := hub.CheckControlMessage(msg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	if err := b.rdb.Publish(ctx, b.controlChannel(), msg).Err(); err != nil {
		return fmt.Errorf("failed to publish a control message: %w", b.fail(err))
	}
	return nil
}

// subscribeControl subscribes to the control channel and waits, at most
// confirmWait, for Redis to confirm it, so that a message sent after Start
// returns reaches this node. If Redis does not answer in time, go-redis
// keeps trying, and messages sent meanwhile are lost (at most once).
// The goroutine it starts ends with Close.
func (b *Broker) subscribeControl() {
	ps := b.rdb.Subscribe(b.ctx, b.controlChannel())
	ctx, cancel := context.WithTimeout(b.ctx, confirmWait)
	if _, err := ps.Receive(ctx); err != nil {
		b.o.Logger.Warn("redis broker: failed to subscribe to control messages; retrying", "err", err)
	}
	cancel()
	ch := ps.Channel(redis.WithChannelSize(64))
	b.controlPS = ps
	b.controlling.Add(1)
	go func() {
		defer b.controlling.Done()
		for m := range ch {
			if len(m.Payload) <= hub.MaxControlBytes {
				b.control([]byte(m.Payload))
			}
		}
	}()
}
