package redisbroker

// Halt stops b's heartbeat as a crash would, without its clean-up: the
// other nodes' sweepers then make its members leave.
func Halt(b *Broker) { close(b.halt) }

// Pause stops (true) or resumes (false) b's heartbeats and sweeps, as a
// node cut off from Redis for a while would see them.
func Pause(b *Broker, paused bool) { b.paused.Store(paused) }
