package natsbroker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/heraldpush/herald/hub"
)

// Control messages (hub.ControlBroker) go over core NATS, on the subject
// Subjects+"_ctl" (outside every stream), which every node of the log
// subscribes to: at most once, like Centrifugo's, and never stored.

// controlQueue bounds the control messages waiting for the hub: the
// channel's capacity, past which the NATS client drops them (a slow
// consumer).
const controlQueue = 64

// controlSubject is the subject of the control messages.
func (b *Broker) controlSubject() string { return b.o.Subjects + "_ctl" }

// OnControl implements hub.ControlBroker. Call it before Start.
func (b *Broker) OnControl(f func(msg []byte)) { b.control = f }

// OnSkip implements hub.SkipReporter. Call it before Start.
func (b *Broker) OnSkip(f func(next uint64)) { b.skipped = f }

// PublishControl implements hub.ControlBroker: it publishes msg and
// flushes, so that the server has it, and has sent it on to every
// subscribed node, when it returns.
func (b *Broker) PublishControl(ctx context.Context, msg []byte) error {
	if b.closed.Load() {
		return hub.ErrClosed
	}
	if err := hub.CheckControlMessage(msg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	if err := b.o.Conn.Publish(b.controlSubject(), msg); err != nil {
		return fmt.Errorf("failed to publish a control message: %w", b.fail(err))
	}
	if err := b.o.Conn.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("failed to publish a control message: %w", b.fail(err))
	}
	return nil
}

// subscribeControl subscribes to the control subject and waits, at most
// confirmWait, for the server to have the subscription, so that a message
// sent after Start returns reaches this node. The goroutine it starts
// hands the messages to the hub and ends with Close.
func (b *Broker) subscribeControl() error {
	ch := make(chan *nats.Msg, controlQueue)
	sub, err := b.o.Conn.ChanSubscribe(b.controlSubject(), ch)
	if err != nil {
		return fmt.Errorf("failed to subscribe to control messages: %w", err)
	}
	if err := b.o.Conn.FlushTimeout(confirmWait); err != nil {
		b.o.Logger.Warn("nats broker: the server did not confirm the control subscription in time", "err", err)
	}
	b.controlling.Add(1)
	go func() {
		defer b.controlling.Done()
		defer func() { _ = sub.Unsubscribe() }()
		for {
			select {
			case m := <-ch:
				if len(m.Data) <= hub.MaxControlBytes {
					b.control(m.Data)
				}
			case <-b.ctx.Done():
				return
			}
		}
	}()
	return nil
}
