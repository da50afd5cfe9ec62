package natsstore

import "time"

var IdemKey = idemKey

// SetRepair sets repairAfter and keyWait until the returned func.
func SetRepair(after, wait time.Duration) (restore func()) {
	a, w := repairAfter, keyWait
	repairAfter, keyWait = after, wait
	return func() { repairAfter, keyWait = a, w }
}
