package natsbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// One sweeper per cluster. A node checks the heartbeats of the registered
// nodes only while it holds the sweep lease: the entry leaseKey of the
// heartbeats bucket, holding its node ID and expiring with the bucket's
// TTL (NodeTTL) unless renewed, which it creates when it is absent and
// renews at each heartbeat. The sweeps thus cost JetStream one heartbeat
// read per registered node every third of NodeTTL, whatever the number of
// nodes; every node sweeping would cost that times the nodes.
//
// A holder that dies stops renewing: its lease expires with its heartbeat,
// and the first node to beat after that takes the lease and sweeps its
// members, so they still leave within about NodeTTL and a third. Two
// sweepers at once (a holder cut off for a while, back after another took
// over, before it reads the lease again) are harmless: ChangePresence
// appends a leave only for a member.

// leaseKey names the lease in the heartbeats bucket; node IDs have no dot.
const leaseKey = "lease.sweep"

// lead takes or renews the sweep lease and reports whether this node
// holds it.
func (b *Broker) lead(ctx context.Context, kv jetstream.KeyValue) (bool, error) {
	e, err := kv.Get(ctx, leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = kv.Create(ctx, leaseKey, []byte(b.node))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // another node was first
		}
	case err != nil:
	case string(e.Value()) != b.node:
		return false, nil
	default:
		_, err = kv.Update(ctx, leaseKey, []byte(b.node), e.Revision())
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return false, nil // it expired meanwhile, and another node took it
		}
	}
	if err != nil {
		return false, fmt.Errorf("failed to take the sweep lease: %w", b.fail(err))
	}
	return true, nil
}

// resign gives the lease up at Close, so that another node sweeps from
// its next heartbeat rather than after NodeTTL.
func (b *Broker) resign(ctx context.Context, kv jetstream.KeyValue) {
	if e, err := kv.Get(ctx, leaseKey); err == nil && string(e.Value()) == b.node {
		_ = kv.Delete(ctx, leaseKey, jetstream.LastRevision(e.Revision()))
	}
}
