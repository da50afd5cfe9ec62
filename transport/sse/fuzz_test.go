package sse_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// FuzzLastEventID opens a stream with an arbitrary Last-Event-ID. Whatever
// it holds, the answer is a 200 stream that starts with its retry hint:
// EventSource cannot read an error and would not reconnect, so a cursor the
// server cannot use gets a reset on the stream, never a 4xx.
//
// Run long with: go test -run '^$' -fuzz FuzzLastEventID -fuzztime 10m ./transport/sse/
func FuzzLastEventID(f *testing.F) {
	fx := newFixture(f, hub.Options{}, sse.Options{})
	if _, err := fx.hub.Publish(context.Background(), hub.Draft{Topic: "fz.a", Data: []byte("1")}); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "abc-1", "0-0", "-1", "x", "zzzzzzzzzz-18446744073709551615", "a-b-c", "é", " 1", "1 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		for _, c := range []byte(id) {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return // not a header value any client can send
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := fx.get(ctx, fx.url([]string{"fz.*"}), http.Header{"Last-Event-ID": {id}})
		if err != nil {
			t.Fatalf("Last-Event-ID %q: %v", id, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Last-Event-ID %q: status %d", id, resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(first, "retry: ") {
			t.Fatalf("Last-Event-ID %q: stream starts %q, %v", id, first, err)
		}
	})
}

// FuzzPresenceQuery opens a stream with arbitrary presence, presence_events
// and topic values. The answer is a 200 stream that starts with its retry
// hint, or a JSON 400 (invalid_request, invalid_pattern): never another
// status, a crash or a hang.
//
// Run long with: go test -run '^$' -fuzz FuzzPresenceQuery -fuzztime 10m ./transport/sse/
func FuzzPresenceQuery(f *testing.F) {
	fx := newFixture(f, hub.Options{}, sse.Options{})
	for _, s := range [][3]string{
		{"room.1", "1", "1"}, {"room.*", "1", ""}, {"room.1", "true", "false"}, {"room.>", "0", "1"},
		{"room.1", "yes", ""}, {"room.1", "", "2"}, {"", "1", "1"}, {"a..b", "1", ""}, {"room.1", "1\x00", "é"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, topic, presence, events string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := fx.get(ctx, fx.url([]string{topic}, "presence", presence, "presence_events", events), nil)
		if err != nil {
			t.Fatalf("%q %q %q: %v", topic, presence, events, err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		switch resp.StatusCode {
		case http.StatusOK:
			if first, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(first, "retry: ") {
				t.Fatalf("%q %q %q: stream starts %q, %v", topic, presence, events, first, err)
			}
		case http.StatusBadRequest:
			body, _ := br.ReadString(0)
			if !strings.Contains(body, `"code":"invalid_request"`) && !strings.Contains(body, `"code":"invalid_pattern"`) {
				t.Fatalf("%q %q %q: 400 %s", topic, presence, events, body)
			}
		default:
			t.Fatalf("%q %q %q: status %d", topic, presence, events, resp.StatusCode)
		}
	})
}

// FuzzStateQuery opens a stream with an arbitrary state= value (and a
// cursor on every other run): 1 and 0 open the stream, anything else is
// 400 invalid_request, never another answer.
//
// Run long with: go test -run '^$' -fuzz FuzzStateQuery -fuzztime 10m ./transport/sse/
func FuzzStateQuery(f *testing.F) {
	fx := newFixture(f, hub.Options{}, sse.Options{})
	if _, err := fx.hub.Publish(context.Background(), hub.Draft{Topic: "fz.a", Key: "k", Data: []byte("1")}); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"1", "0", "2", "true", "", "01", " 1", "1\x00", "é"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, v string, cursor bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		extra := []string{"state", v}
		if cursor {
			extra = append(extra, "last_event_id", "abc-1")
		}
		resp, err := fx.get(ctx, fx.url([]string{"fz.*"}, extra...), nil)
		if err != nil {
			t.Fatalf("state=%q: %v", v, err)
		}
		defer resp.Body.Close()
		if v == "0" || v == "1" {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("state=%q: status %d", v, resp.StatusCode)
			}
			return
		}
		assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidRequest)
	})
}

// FuzzShapingQuery: any delta= or conflate= value either opens the stream
// (exactly fossil; a duration from 50ms to 60s) or is 400 invalid_request.
func FuzzShapingQuery(f *testing.F) {
	fx := newFixture(f, hub.Options{}, sse.Options{})
	for _, s := range []string{"fossil", "FOSSIL", "", "250ms", "50ms", "49ms", "60s", "1m0.001s", "1e3ms", "-1s", "é", "1\x00s"} {
		f.Add("delta", s)
		f.Add("conflate", s)
	}
	f.Fuzz(func(t *testing.T, name, v string) {
		if name != "delta" && name != "conflate" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := fx.get(ctx, fx.url([]string{"fz.*"}, name, v), nil)
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		defer resp.Body.Close()
		ok := name == "delta" && v == "fossil"
		if d, err := time.ParseDuration(v); name == "conflate" && err == nil && d >= 50*time.Millisecond && d <= time.Minute {
			ok = true
		}
		if ok {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s=%q: status %d", name, v, resp.StatusCode)
			}
			return
		}
		assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidRequest)
	})
}
