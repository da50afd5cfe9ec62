package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
)

// debugServer serves the internal endpoints of --debug-addr: Go's profiles
// under /debug/pprof/ and POST /debug/free-memory, which collects garbage
// and returns every free page to the operating system, so that a memory
// measurement (herald bench --mode idle --server-debug) reads what the
// process really holds rather than what the collector keeps in reserve.
// They reveal internals and cost CPU: bind them to an address only
// operators reach.
type debugServer struct {
	srv  *http.Server
	done chan error
	addr string
}

func startDebug(addr string, log *slog.Logger) (*debugServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/free-memory", freeMemory)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s for --debug-addr: %w", addr, err)
	}
	d := &debugServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		done: make(chan error, 1),
		addr: ln.Addr().String(),
	}
	if host, _, _ := net.SplitHostPort(d.addr); !net.ParseIP(host).IsLoopback() {
		log.Warn("the debug endpoints are reachable beyond this machine: profiles reveal internals", "addr", d.addr)
	}
	go func() { d.done <- d.srv.Serve(ln) }()
	log.Info("debug endpoints listening", "addr", d.addr)
	return d, nil
}

// stop closes the listener and any request in flight (a CPU profile may
// run for many seconds) and waits for Serve to return.
func (d *debugServer) stop() {
	_ = d.srv.Close()
	<-d.done
}

// freeMemory answers with the memory the runtime holds after a full
// collection and release.
func freeMemory(w http.ResponseWriter, _ *http.Request) {
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]uint64{
		"heap_inuse_bytes":  m.HeapInuse,
		"stack_inuse_bytes": m.StackInuse,
		"sys_bytes":         m.Sys,
		"goroutines":        uint64(runtime.NumGoroutine()),
	})
}
