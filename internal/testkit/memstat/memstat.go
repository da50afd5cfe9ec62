// Package memstat samples a test process's memory for the tests that
// measure what a connection costs.
package memstat

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Sample is the process's memory at one moment, after garbage collection.
type Sample struct {
	Heap, Stack, RSS uint64 // heap and stack spans in use, resident set
	Goroutines       int
}

// Now collects garbage, returns free memory to the system (so that RSS is
// comparable between samples) and samples.
func Now() Sample {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := Sample{Heap: ms.HeapInuse, Stack: ms.StackInuse, Goroutines: runtime.NumGoroutine()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.Atoi(f[0])
					s.RSS = uint64(kb) << 10
				}
			}
		}
	}
	return s
}

// PerConn is (a − b) / n: what each of n connections added between two
// samples.
func PerConn(a, b uint64, n int) float64 { return float64(int64(a)-int64(b)) / float64(n) }
