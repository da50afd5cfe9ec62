package httpapi

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

var fastAccepts = []string{
	`{"topic":"orders.42","type":"order.created","data":{"total":12.5}}`,
	`{"data":[1,"two",{"three":null}],"topic":"a","type":"b"}`,
	` { "topic" : "a" , "data" : "x\"y" } `,
	"{\n\t\"topic\": \"a\",\r\n\t\"data\": " + `{"s": "}]\\\"", "t": [{}]}` + "\n}\n",
	`{"topic":"a"}`,
	`{"topic":"a","type":"","data":null}`,
	`{"topic":"a","data":-1.5e3}`,
	`{"topic":"a","data":true}`,
	`{"topic":"a","data":"é ünïcode"}`,
	`{"topic":"a","key":"user:42.name_x-y","data":{"n":1}}`,
	`{"key":"k","topic":"a"}`,
}

var fastDeclines = []string{
	``,
	`[]`,
	`{}`,
	`{"type":"b","data":1}`,               // no topic
	`{"topic":"a","events":[]}`,           // another key
	`{"Topic":"a"}`,                       // encoding/json matches keys case-insensitively
	`{"topic":"a","topic":"b"}`,           // duplicate key: the last one wins there
	`{"topic":"a\u002eb"}`,                // escape in a string
	`{"top\u0069c":"a"}`,                  // escape in a key
	`{"topic":"a","data":}`,               // no value
	`{"topic":"a","data":1 2}`,            // two values
	`{"topic":"a","data":{"x":1]}`,        // mismatched brackets
	`{"topic":"a","data":"open}`,          // unterminated string
	`{"topic":"a"} x`,                     // trailing bytes
	`{"topic":"a",}`,                      // trailing comma
	`{"topic":"a","data":nul}`,            // bad literal
	`{"topic":"bad topic!"}`,              // fails validation
	`{"topic":"a","type":"herald.reset"}`, // reserved type
	`{"topic":"a","type":"HERALD.reset"}`, // reserved type, in capitals
	`{"topic":"a","key":""}`,              // empty key
	`{"topic":"a","key":"a b"}`,           // key fails validation
	`{"topic":"a","key":"k","key":"j"}`,   // duplicate key
	`{"topic":"a","key":1}`,               // key not a string
	`{"topic":null}`,                      // not a string
	`{"topic":"a","data":{"x":1}`,         // unterminated object
	"{\"topic\":\"a\x01\"}",               // control byte
}

// TestParseSingleFastEngages pins which bodies take the fast path, so that
// a change which quietly sends every publish through encoding/json fails.
func TestParseSingleFastEngages(t *testing.T) {
	a := &api{maxBatch: DefaultMaxBatch}
	for _, body := range fastAccepts {
		d, ok := parseSingleFast([]byte(body))
		if !ok {
			t.Errorf("fast path declined %q", body)
			continue
		}
		want, batch, err := a.decodePublish([]byte(body))
		if err != nil || batch || len(want) != 1 {
			t.Fatalf("encoding/json path on %q: %v, batch %v, %d drafts", body, err, batch, len(want))
		}
		if d.Topic != want[0].Topic || d.Type != want[0].Type || d.Key != want[0].Key || !bytes.Equal(d.Data, want[0].Data) {
			t.Errorf("%q: fast %q %q %q %s, encoding/json %q %q %q %s", body,
				d.Topic, d.Type, d.Key, d.Data, want[0].Topic, want[0].Type, want[0].Key, want[0].Data)
		}
	}
	for _, body := range fastDeclines {
		if d, ok := parseSingleFast([]byte(body)); ok {
			t.Errorf("fast path accepted %q as %+v", body, d)
		}
	}
}

// FuzzParseSingleFast checks that every body the fast path accepts is
// decoded by encoding/json to the same event: the fast path may decline
// anything, but never disagree.
func FuzzParseSingleFast(f *testing.F) {
	for _, s := range fastAccepts {
		f.Add([]byte(s))
	}
	for _, s := range fastDeclines {
		f.Add([]byte(s))
	}
	a := &api{maxBatch: DefaultMaxBatch}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, ok := parseSingleFast(body)
		if !ok {
			return
		}
		if !utf8.Valid(body) {
			// parsePublish rejects it before the fast path runs.
			return
		}
		want, batch, err := a.decodePublish(body)
		if err != nil {
			t.Fatalf("fast path accepted %q, encoding/json rejects it: %v", body, err)
		}
		if batch || len(want) != 1 {
			t.Fatalf("fast path accepted %q as one event, encoding/json saw batch %v with %d", body, batch, len(want))
		}
		if d.Topic != want[0].Topic || d.Type != want[0].Type || d.Key != want[0].Key || !bytes.Equal(d.Data, want[0].Data) {
			t.Fatalf("%q: fast %q %q %q %s, encoding/json %q %q %q %s", body,
				d.Topic, d.Type, d.Key, d.Data, want[0].Topic, want[0].Type, want[0].Key, want[0].Data)
		}
	})
}

// FuzzParseActionFast checks parseAction's fast path against encoding/json
// the same way: whatever the fast path accepts decodes to the same request.
func FuzzParseActionFast(f *testing.F) {
	for _, s := range []string{
		`{"type":"echo","topic":"todo.1","payload":{"title":"milk","n":42}}`,
		` {"payload":[1,2] , "topic":"a","type":"b"} `,
		`{"type":"echo","topic":"a"}`,
		`{"type":"echo","topic":"a","payload":null}`,
		`{"type":"","topic":"a"}`,
		`{"type":"echo","topic":"a","payload":{"x":]}`,
		`{"type":"echo","topic":"a","payload":1,"payload":2}`,
		`{"type":"echo","topic":"a","data":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if t := bytes.TrimLeft(body, " \t\r\n"); !utf8.Valid(body) || len(t) == 0 || t[0] != '{' {
			return // parseAction rejects it before either path runs
		}
		got, gerr := parseAction(body)
		want, werr := decodeAction(body)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: parseAction %v, encoding/json %v", body, gerr, werr)
		}
		if gerr != nil {
			if gerr.Code != werr.Code || gerr.Message != werr.Message {
				t.Fatalf("%q: parseAction %v, encoding/json %v", body, gerr, werr)
			}
			return
		}
		if got.Type != want.Type || got.Topic != want.Topic || !bytes.Equal(got.Payload, want.Payload) ||
			(got.Payload == nil) != (want.Payload == nil) {
			t.Fatalf("%q: parseAction %+v, encoding/json %+v", body, got, want)
		}
	})
}

func TestParseActionFastEngages(t *testing.T) {
	for _, body := range []string{
		`{"type":"echo","topic":"todo.1","payload":{"title":"milk","n":42}}`,
		`{"type":"echo","topic":"a"}`,
	} {
		o, ok := parseFlatObject([]byte(body), "payload")
		if !ok || o.typ == "" || o.topic == "" {
			t.Errorf("fast path declined %q", body)
		}
	}
}
