package ws_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/memstat"
	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
)

// idleTarget is what an idle connection may cost the server, heap and stacks.
const idleTarget = 12 << 10

// TestIdleConnectionMemory measures what an idle, subscribed connection
// costs the server: heap and goroutine stacks, after GC, with the clients in
// another process. It is slow, so it runs only with HERALD_MEMTEST=N (the
// number of connections); the target is checked only without -race.
func TestIdleConnectionMemory(t *testing.T) {
	if os.Getenv("HERALD_MEMTEST_CLIENT") != "" {
		memClient(t)
		return
	}
	n, _ := strconv.Atoi(os.Getenv("HERALD_MEMTEST"))
	if n <= 0 {
		t.Skip("set HERALD_MEMTEST=N to measure N idle connections")
	}
	if os.Getenv("HERALD_MEMTEST_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	// With HERALD_MEMTEST_PING=1 the connections are kept alive by pings
	// their clients answer, as in production.
	pings := os.Getenv("HERALD_MEMTEST_PING") != ""
	opts := envOptions{hub: hub.Options{QueueBytes: 64 << 10}}
	const pingEvery = 8 * time.Second
	if pings {
		opts.ws.PingInterval = pingEvery
		opts.ws.WriteTimeout = 2 * time.Second // also the ping's timeout
	}
	e := newEnv(t, opts)
	e.publish("mem.t", "warm up")

	base := memstat.Now()
	var baseMS runtime.MemStats
	runtime.ReadMemStats(&baseMS)
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleConnectionMemory$", "-test.v")
	cmd.Env = append(os.Environ(), "HERALD_MEMTEST_CLIENT="+strings.TrimPrefix(e.srv.URL, "http://"), "HERALD_MEMTEST_N="+strconv.Itoa(n))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	dialStart := time.Now()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "READY") {
	}
	wait.For(t, 60*time.Second, "all clients", func() bool { return e.wsClients() == int64(n) })
	if pings {
		// Measure between two rounds: once every connection was pinged and
		// the timers of those pings (5 s in coder/websocket) have run out,
		// before the second round begins.
		ready := time.Now()
		if ready.Sub(dialStart) > pingEvery-5500*time.Millisecond {
			t.Skipf("connecting took %v: no quiet window between ping rounds", ready.Sub(dialStart))
		}
		wait.For(t, 30*time.Second, "the first keep-alive round", func() bool {
			return time.Since(ready) > pingEvery+5200*time.Millisecond
		})
	}
	// The client read every subscribe's reply, so the connections are idle
	// or about to be; wait until their writers have parked (one goroutine
	// each, the reader) and stacks stop changing between collections.
	prev := memstat.Now()
	wait.For(t, 30*time.Second, "the connections to settle", func() bool {
		for range 4 { // each GC halves stacks that use under a quarter of their size
			runtime.GC()
		}
		cur := memstat.Now()
		settled := cur.Stack == prev.Stack && cur.Goroutines == base.Goroutines+n
		prev = cur
		return settled
	})
	after := memstat.Now()
	if os.Getenv("HERALD_MEMTEST_CLASSES") != "" {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("heap_alloc %.0f B/conn, heap_inuse %.0f B/conn, unused %.0f B/conn",
			memstat.PerConn(ms.HeapAlloc, baseMS.HeapAlloc, n), memstat.PerConn(ms.HeapInuse, baseMS.HeapInuse, n),
			memstat.PerConn(ms.HeapInuse-ms.HeapAlloc, baseMS.HeapInuse-baseMS.HeapAlloc, n))
		for i, c := range ms.BySize {
			b := baseMS.BySize[i]
			allocs := memstat.PerConn(c.Mallocs, b.Mallocs, n)
			live := memstat.PerConn(c.Mallocs-c.Frees, b.Mallocs-b.Frees, n)
			if allocs > 0.05 || live > 0.05 || live < -0.05 {
				t.Logf("class %5d: allocs %6.2f/conn, live %5.2f/conn", c.Size, allocs, live)
			}
		}
	}
	if f := os.Getenv("HERALD_MEMTEST_PROFILE"); f != "" {
		out, _ := os.Create(f)
		_ = pprof.Lookup("heap").WriteTo(out, 0)
		out.Close()
		g, _ := os.Create(f + ".goroutines")
		_ = pprof.Lookup("goroutine").WriteTo(g, 1)
		g.Close()
	}
	per := func(a, b uint64) float64 { return memstat.PerConn(a, b, n) }
	defer func() {
		if total := per(after.Heap+after.Stack, base.Heap+base.Stack); total > idleTarget && !raceEnabled {
			t.Errorf("an idle connection costs %.0f B, above the %d B target", total, idleTarget)
		}
	}()
	t.Logf("%d idle connections: heap %.0f B/conn, stacks %.0f B/conn, total %.0f B/conn, RSS %.0f B/conn, goroutines %.2f/conn",
		n, per(after.Heap, base.Heap), per(after.Stack, base.Stack), per(after.Heap+after.Stack, base.Heap+base.Stack),
		per(after.RSS, base.RSS), float64(after.Goroutines-base.Goroutines)/float64(n))
}

// memClient opens the connections with raw sockets (no goroutine per
// connection on this side), subscribes each, and holds them until stdin closes.
// With HERALD_MEMTEST_DEFLATE=1 each negotiates permessage-deflate, as
// browsers do; with HERALD_MEMTEST_DEFLATE=client each also sends its
// subscribe compressed, as Chromium sends every message.
func memClient(t *testing.T) {
	addr := os.Getenv("HERALD_MEMTEST_CLIENT")
	n, _ := strconv.Atoi(os.Getenv("HERALD_MEMTEST_N"))
	if os.Getenv("HERALD_MEMTEST_PING") != "" {
		memPingClient(t, addr, n)
		return
	}
	conns := make([]net.Conn, 0, n)
	sub := textFrame(`{"op":"subscribe","topics":["mem.t","mem.>"]}`)
	deflating := os.Getenv("HERALD_MEMTEST_DEFLATE")
	offer := ""
	if deflating != "" {
		offer = "Sec-WebSocket-Extensions: " + offerChromium + "\r\n"
	}
	if deflating == "client" {
		sub = compressedFrame(deflate(t, []byte(`{"op":"subscribe","topics":["mem.t","mem.>"]}`)))
	}
	if os.Getenv("HERALD_MEMTEST_NOSUB") != "" {
		sub = nil
	}
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + offer + "\r\n"
		if _, err := c.Write(append([]byte(req), sub...)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake %d: %v", i, err)
		}
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); (deflating != "") != (got == wantExtensions) {
			t.Fatalf("handshake %d: extensions %q", i, got)
		}
		if sub != nil {
			r := &rawConn{t: t, nc: c, br: br}
			if f := r.readText(); f.Op != "ok" {
				t.Fatalf("connection %d: got %s, want ok", i, f)
			}
		}
		conns = append(conns, c)
	}
	fmt.Println("READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	for _, c := range conns {
		c.Close()
	}
}

// memPingClient holds n subscribed connections that answer pings.
func memPingClient(t *testing.T, addr string, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{}}
	var wg sync.WaitGroup
	for i := range n {
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws", &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","topics":["mem.t","mem.>"]}`)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"ok"`) {
			t.Fatalf("connection %d: %s, %v", i, b, err)
		}
		wg.Add(1)
		go func() { // answers pings while it waits
			defer wg.Done()
			_, _, _ = c.Read(ctx)
		}()
	}
	fmt.Println("READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	cancel()
	wg.Wait()
}
