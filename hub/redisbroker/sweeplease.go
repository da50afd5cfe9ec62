package redisbroker

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// One sweeper per cluster. Every node checks the heartbeats of the nodes
// with members only while it holds the sweep lease, {prefix}:sweeper (the
// holder's node ID, expiring after NodeTTL), which it takes when it is
// free and renews at each heartbeat. The sweeps thus cost the broker one
// call per node with members every third of NodeTTL, whatever the number
// of nodes; every node sweeping would cost that times the nodes.
//
// A holder that dies stops renewing: its lease expires with its heartbeat,
// and the first node to beat after that takes the lease and sweeps its
// members, so they still leave within about NodeTTL and a third. Two
// sweepers at once (a holder cut off from Redis for a while, back after
// another took over) are harmless: the sweep script makes a member leave
// only while it is one.

// leaseScript takes the lease KEYS[1] for node ARGV[1] for ARGV[2] ms if
// it is free or already the node's, and returns 1; 0 if another node
// holds it.
var leaseScript = redis.NewScript(`
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// releaseScript deletes the lease KEYS[1] if node ARGV[1] holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (b *Broker) leaseKey() string { return "{" + b.o.Prefix + "}:sweeper" }

// lead takes or renews the sweep lease and reports whether this node
// holds it.
func (b *Broker) lead(ctx context.Context) (bool, error) {
	n, err := leaseScript.Run(ctx, b.rdb, []string{b.leaseKey()}, b.node, b.o.NodeTTL.Milliseconds()).Int()
	return n == 1, err
}

// resign gives the lease up at Close, so that another node sweeps from
// its next heartbeat rather than after NodeTTL.
func (b *Broker) resign(ctx context.Context) {
	releaseScript.Run(ctx, b.rdb, []string{b.leaseKey()}, b.node)
}
