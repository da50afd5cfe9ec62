package server

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

// internalServer serves the internal listener of --metrics-addr: GET
// /metrics and, with --pprof, Go's profiles under /debug/pprof/ and POST
// /debug/free-memory, which collects garbage and returns every free page
// to the operating system, so that a memory measurement (herald bench
// --mode idle --server-debug) reads what the process really holds rather
// than what the collector keeps in reserve. Profiles reveal internals and
// cost CPU: the listener belongs on an address only operators reach.
type internalServer struct {
	srv  *http.Server
	done chan error
	addr string
}

func startInternal(addr string, metrics http.Handler, profiles bool, log *slog.Logger) (*internalServer, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	if profiles {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("POST /debug/free-memory", freeMemory)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s for --metrics-addr: %w", addr, err)
	}
	d := &internalServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		done: make(chan error, 1),
		addr: ln.Addr().String(),
	}
	if host, _, _ := net.SplitHostPort(d.addr); profiles && !net.ParseIP(host).IsLoopback() {
		log.Warn("the profiling endpoints are reachable beyond this machine: profiles reveal internals", "addr", d.addr)
	}
	go func() { d.done <- d.srv.Serve(ln) }()
	log.Info("internal endpoints listening", "addr", d.addr, "pprof", profiles)
	return d, nil
}

// stop closes the listener and any request in flight (a CPU profile may
// run for many seconds) and waits for Serve to return.
func (d *internalServer) stop() {
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
