package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// Forced disconnects on both transports: every cut subscriber resumes
// from its cursor and the run still counts every delivery exactly.
func TestRunChaos(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "mixed", Subscribers: 30, Topics: 2, Publishers: 2,
		Rate: 300, Events: 600, ChaosDisconnect: 40, Seed: 42, SourceIPs: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 30)
	if rep.Published != 600 || rep.Expected != 600*15 || rep.Incomplete != 0 || rep.Resets != 0 {
		t.Fatalf("published %d, expected %d, incomplete %d, resets %d", rep.Published, rep.Expected, rep.Incomplete, rep.Resets)
	}
	if rep.Reconnects == 0 || rep.Reconnects != rep.Disconnects || rep.ReconnectMS == nil || rep.Seed != 42 {
		t.Fatalf("reconnects %d after %d disconnects (%+v), seed %d", rep.Reconnects, rep.Disconnects, rep.ReconnectMS, rep.Seed)
	}
}

// A fixed count of events is published exactly, whatever the batch and
// publisher split.
func TestRunEvents(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: 3, Topics: 3, Publishers: 2,
		Rate: 200, Batch: 4, Events: 25,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 3)
	if rep.Published != 25 || rep.Expected != 25 {
		t.Fatalf("published %d events, %d deliveries expected; want 25 and 25", rep.Published, rep.Expected)
	}
}

// A resume whose cursor the server cannot serve (here: of another log)
// gets a reset, which the run counts, on either transport; the events
// after it arrive, and the first tells the subscriber its log's epoch.
func TestResumeCountsResets(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := &run{cfg: Config{URL: ts.url, Prefix: "lg"}, errs: map[string]int64{}}
	for i := range r.hists {
		r.hists[i].h = newHist()
	}
	src := newSources(0, 1)[0]
	subs := []*subscriber{{idx: 0}, {idx: 1}}
	var wg sync.WaitGroup
	rctx, stop := context.WithCancel(ctx)
	for i, kind := range []string{"sse", "ws"} {
		conn, err := r.connect(ctx, kind, subs[i], src, "otherlog-5")
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = conn.read(rctx)
		}()
	}
	wait.For(t, 10*time.Second, "both resets", func() bool { return r.resets.Load() == 2 })
	msgs, err := ts.hub.Publish(ctx, hub.Draft{Topic: "lg.0", Type: "bench", Data: []byte(`{"bseq":1,"bts":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the event on both", func() bool {
		return subs[0].received.Load() == 1 && subs[1].received.Load() == 1
	})
	stop()
	wg.Wait()
	epoch := msgs[0].ID.Epoch
	for i, s := range subs {
		if s.epoch != epoch || !s.resumable.Load() || s.cursor != msgs[0].ID.Seq {
			t.Errorf("subscriber %d: epoch %q cursor %d resumable %v, want %q %d true", i, s.epoch, s.cursor, s.resumable.Load(), epoch, msgs[0].ID.Seq)
		}
	}
}

func TestEpochOf(t *testing.T) {
	for in, want := range map[string]string{
		`{"op":"event","id":"abc-12","topic":"t"}`: "abc",
		`data: {"id":"x2y-0"}`:                     "x2y",
		`{"id":"-12"}`:                             "",
		`{"id":"nodash"}`:                          "",
		`{"op":"ok"}`:                              "",
		`{"id":"abc-1`:                             "",
	} {
		if got := epochOf([]byte(in)); got != want {
			t.Errorf("epochOf(%s) = %q, want %q", in, got, want)
		}
	}
}
