package ws

import (
	"bytes"
	stdflate "compress/flate"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	kflate "github.com/klauspost/compress/flate"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkDeliverDashboard delivers dashboard events (dashboardData, one
// field changing per event) to 1,000 subscribers over real sockets, each
// event written with every subscriber's WriteBatch in turn, as the hub's
// writers do, with and without permessage-deflate. The clients read and
// discard in goroutines of the same process. Reported per delivery: the
// benchmark goroutine's time (ns/delivery), the process's CPU, clients
// included (cpu-ns/delivery), and the bytes sent (B/delivery).
//
//	go test -run '^$' -bench DeliverDashboard -benchtime 400x -count 3 ./transport/ws/
func BenchmarkDeliverDashboard(b *testing.B) {
	for _, mode := range []string{"plain", "deflate"} {
		b.Run(mode, func(b *testing.B) { benchDeliver(b, 1000, mode == "deflate") })
	}
}

func benchDeliver(b *testing.B, subs int, deflate bool) {
	h := &Handler{opts: Options{WriteTimeout: 10 * time.Second}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var read atomic.Int64
	var readers sync.WaitGroup
	sessions := make([]*session, subs)
	for i := range sessions {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			n, _ := io.Copy(io.Discard, c)
			read.Add(n)
			c.Close()
		}()
		s := &session{h: h, conn: newCorkConn(sc, nil, h.opts.WriteTimeout, &h.writes)}
		s.deflate = deflate
		sessions[i] = s
	}
	msgs := make([]*hub.Message, b.N)
	for i := range msgs {
		msgs[i] = hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "bench", Seq: uint64(i + 1)}, Topic: "dash.hosts",
			Type: "metrics", Data: dashboardData(i), Time: time.Now()})
	}
	items := make([]hub.Item, 1)
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := range b.N {
		items[0] = hub.Item{Msg: msgs[i]}
		for _, s := range sessions {
			if err := s.WriteBatch(items); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	for _, s := range sessions {
		_ = s.conn.Close()
	}
	readers.Wait()
	deliveries := float64(b.N * subs)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(processCPU(b)-cpu0)/deliveries, "cpu-ns/delivery")
	b.ReportMetric(float64(read.Load())/deliveries, "B/delivery")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWriteBatch is the writer's hot path per event with compression
// off: batches of 64 dashboard events (already encoded, as a busy writer
// drains them) written by one session to a real socket that a goroutine
// reads and discards. It compiles against the write path before
// compression, for a before/after in one session.
//
//	go test -run '^$' -bench 'WriteBatch$' -benchtime 20000x -count 5 ./transport/ws/
func BenchmarkWriteBatch(b *testing.B) {
	const batch = 64
	h := &Handler{opts: Options{WriteTimeout: 10 * time.Second}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
	s := &session{h: h, conn: newCorkConn(sc, nil, h.opts.WriteTimeout, &h.writes)}
	items := make([]hub.Item, batch)
	for i := range items {
		m := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "bench", Seq: uint64(i + 1)}, Topic: "dash.hosts",
			Type: "metrics", Data: dashboardData(i), Time: time.Now()})
		items[i] = hub.Item{Msg: m}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.WriteBatch(items); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = s.conn.Close()
	<-done
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
}

// processCPU is the process's user and system CPU time so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkDeflateChoice compresses one dashboard event's payload with
// each candidate DEFLATE encoder, as deflateFormat would: without context
// takeover, so a writer is reset for every message.
//
//	go test -run '^$' -bench DeflateChoice -benchtime 5000x -count 3 ./transport/ws/
func BenchmarkDeflateChoice(b *testing.B) {
	m := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "bench", Seq: 1}, Topic: "dash.hosts", Type: "metrics",
		Data: dashboardData(1), Time: time.Now()})
	p := append([]byte(eventOp), m.Envelope()[1:]...)
	var out bytes.Buffer
	run := func(name string, compress func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for range b.N {
				out.Reset()
				compress()
			}
			b.ReportMetric(float64(out.Len()), "out-bytes")
		})
	}
	run("klauspost-stateless", func() { _ = kflate.StatelessDeflate(&out, p, false, nil) })
	for _, level := range []int{1, 3, 5} {
		w, _ := kflate.NewWriter(&out, level)
		run(fmt.Sprintf("klauspost-writer-%d", level), func() { w.Reset(&out); _, _ = w.Write(p); _ = w.Flush() })
	}
	for _, level := range []int{stdflate.BestSpeed, stdflate.DefaultCompression} {
		w, _ := stdflate.NewWriter(&out, level)
		run(fmt.Sprintf("compress-flate-%d", level), func() { w.Reset(&out); _, _ = w.Write(p); _ = w.Flush() })
	}
}

// BenchmarkDeflateFrame is deflateFormat's cost per event: the compressed
// frame of a fresh message.
func BenchmarkDeflateFrame(b *testing.B) {
	msgs := make([]*hub.Message, b.N)
	for i := range msgs {
		msgs[i] = hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "bench", Seq: uint64(i + 1)}, Topic: "dash.hosts",
			Type: "metrics", Data: dashboardData(i), Time: time.Now()})
	}
	b.SetBytes(int64(len(msgs[0].Envelope())))
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		n += msgs[i].Frame(deflateFormat).Len()
	}
	b.ReportMetric(float64(n)/float64(b.N), "frame-bytes")
}
