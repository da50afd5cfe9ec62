package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/memstat"
	"github.com/heraldpush/herald/internal/wsframe"
)

// The measurements behind keeping wsConn rather than coder/websocket's
// client (see wsclient.go and docs/benchmarks.md): the cost of a received
// message, and the memory of a subscriber connection.

// frameServer accepts WebSocket handshakes and then streams the same
// event frame to every client until it leaves.
func frameServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	event := fmt.Appendf(nil,
		`{"op":"event","id":"abcdefghij-%d","topic":"bench.0","type":"bench","data":{"bseq":%d,"bts":%d,"pad":"xxxxxxxxxxxxxxxx"},"time":"2026-11-21T00:00:00Z"}`,
		12345, 12345, time.Now().UnixNano())
	var block []byte
	for range 64 {
		block = append(block, serverFrame(true, wsframe.OpText, event, false)...)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				// Bounds a run whose client stopped reading without leaving.
				_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
					"Sec-WebSocket-Accept: " + wsframe.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
				if _, err := conn.Write([]byte(resp)); err != nil {
					return
				}
				for {
					if _, err := conn.Write(block); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return "http://" + ln.Addr().String()
}

// BenchmarkClientRead is the cost of one received event message, frames
// arriving as a coalescing server sends them.
//
//	go test -run '^$' -bench ClientRead -benchmem -count 3 ./cmd/herald/internal/bench/
func BenchmarkClientRead(b *testing.B) {
	b.Run("wsConn", func(b *testing.B) {
		url := frameServer(b)
		c, err := dialWS(context.Background(), &net.Dialer{}, nil, url, wsOptions{bufSize: wsBufferSize})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.next(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("coder", func(b *testing.B) {
		url := frameServer(b)
		ctx := context.Background()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/ws",
			&websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{}}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(wsReadLimit)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestClientMemory measures what one subscribed, idle subscriber
// connection costs the load generator (heap and stacks after GC, one
// reading goroutine each), with wsConn and with coder/websocket's client. It
// needs a running server and is slow, so it runs only with
// HERALD_CLIENTMEM=N (connections per client) and HERALD_CLIENTMEM_URL:
//
//	bin/herald serve --addr 127.0.0.1:18093 --log-level warn --max-conns 0 &
//	HERALD_CLIENTMEM=5000 HERALD_CLIENTMEM_URL=http://127.0.0.1:18093 \
//	  go test -run TestClientMemory -v ./cmd/herald/internal/bench/
func TestClientMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HERALD_CLIENTMEM"))
	url := os.Getenv("HERALD_CLIENTMEM_URL")
	if n <= 0 || url == "" {
		t.Skip("set HERALD_CLIENTMEM=N and HERALD_CLIENTMEM_URL to a running server")
	}
	ctx := context.Background()
	subscribe := `{"op":"subscribe","ref":1,"topics":["clientmem"]}`
	dialers := map[string]func(i int) (memConn, error){
		"wsConn-4KiB":  func(i int) (memConn, error) { return dialOurs(ctx, url, i, idleBufferSize) },
		"wsConn-64KiB": func(i int) (memConn, error) { return dialOurs(ctx, url, i, wsBufferSize) },
		"coder": func(i int) (memConn, error) {
			hc := &http.Client{Transport: &http.Transport{DialContext: sourceDialer(i).DialContext}}
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/ws",
				&websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"herald.v1"}})
			if err != nil {
				return memConn{}, err
			}
			if err := c.Write(ctx, websocket.MessageText, []byte(subscribe)); err != nil {
				return memConn{}, err
			}
			if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"op":"ok"`) {
				return memConn{}, fmt.Errorf("subscribe: %s, %v", b, err)
			}
			hc.CloseIdleConnections()
			return memConn{
				read: func() error {
					for {
						if _, _, err := c.Read(ctx); err != nil {
							return err
						}
					}
				},
				close: func() { _ = c.CloseNow() },
			}, nil
		},
	}
	for _, name := range []string{"wsConn-4KiB", "wsConn-64KiB", "coder"} {
		t.Run(name, func(t *testing.T) {
			before := memstat.Now()
			conns := make([]memConn, 0, n)
			var wg sync.WaitGroup
			defer func() {
				for _, c := range conns {
					c.close()
				}
				wg.Wait()
			}()
			for i := range n {
				c, err := dialers[name](i)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				conns = append(conns, c)
				wg.Add(1)
				go func() { defer wg.Done(); _ = c.read() }()
			}
			// Let the readers block and the dial's garbage go.
			var after memstat.Sample
			deadline := time.Now().Add(30 * time.Second)
			for prev := memstat.Now(); ; prev = after {
				after = memstat.Now()
				if after.Stack == prev.Stack && after.Goroutines >= before.Goroutines+n || time.Now().After(deadline) {
					break
				}
			}
			per := func(a, b uint64) float64 { return memstat.PerConn(a, b, n) }
			t.Logf("%s, %d connections: heap %.0f B/conn, stacks %.0f B/conn, RSS %.0f B/conn, goroutines %.2f/conn",
				name, n, per(after.Heap, before.Heap), per(after.Stack, before.Stack), per(after.RSS, before.RSS),
				float64(after.Goroutines-before.Goroutines)/float64(n))
		})
	}
}

// memConn is one measured connection.
type memConn struct {
	read  func() error // reads until the connection closes
	close func()
}

func dialOurs(ctx context.Context, url string, i, bufSize int) (memConn, error) {
	var out memConn
	c, err := dialWS(ctx, sourceDialer(i), nil, url, wsOptions{bufSize: bufSize})
	if err != nil {
		return out, err
	}
	if err := c.subscribe(ctx, "clientmem", ""); err != nil {
		c.Close()
		return out, err
	}
	out.read = func() error {
		for {
			if _, err := c.next(); err != nil {
				return err
			}
		}
	}
	out.close = func() { c.Close() }
	return out, nil
}

// sourceDialer spreads connections over 127.0.0.1–4, 20,000 each at most.
func sourceDialer(i int) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i/20000))}, Control: bindNoPort}
}
