package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets: run with `go test -fuzz FuzzParsePattern ./hub/` (one at a
// time); a normal test run executes the seeds and testdata/fuzz.

func FuzzParsePattern(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.pattern, c.topic)
	}
	for _, s := range []string{"", ".", "a..b", ">.a", ">>", "a*", "*a", "a.>.b", "é", "a\x00", strings.Repeat("a.", 128)} {
		f.Add(s, "a.b")
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if !errors.Is(err, ErrInvalidPattern) {
				t.Fatalf("ParsePattern(%q) error %v is not ErrInvalidPattern", pattern, err)
			}
			if ValidateTopic(pattern) == nil {
				t.Fatalf("%q is a topic but not a pattern", pattern)
			}
			return
		}
		if p.String() != pattern || len(pattern) > MaxNameLen {
			t.Fatalf("ParsePattern(%q) = %q", pattern, p.String())
		}
		q, err := ParsePattern(p.String())
		if err != nil || q != p {
			t.Fatalf("pattern %q does not round-trip: %v", pattern, err)
		}
		if (ValidateTopic(pattern) == nil) != p.Literal() {
			t.Fatalf("%q: Literal %v disagrees with ValidateTopic", pattern, p.Literal())
		}
		if p.Literal() && !p.Match(pattern) {
			t.Fatalf("literal %q does not match itself", pattern)
		}
		if ValidateTopic(topic) != nil {
			return
		}
		if _, err := ParsePattern(topic); err != nil {
			t.Fatalf("topic %q is not a pattern: %v", topic, err)
		}
		if !MustPattern(topic).Match(topic) {
			t.Fatalf("topic %q as a pattern does not match itself", topic)
		}
		got := p.Match(topic)
		if want := refMatch(pattern, topic); got != want {
			t.Fatalf("%q.Match(%q) = %v, reference says %v", pattern, topic, got, want)
		}
		// The index agrees, and forgets the pattern completely on remove.
		x := newIndex()
		c := &Client{}
		x.add(p, c)
		if in := slices.Contains(x.match(topic, nil), c); in != got {
			t.Fatalf("index: %q matching %q = %v, Match says %v", pattern, topic, in, got)
		}
		if !x.remove(p, c) || len(x.exact) != 0 || x.wild != 0 || !x.root.empty() {
			t.Fatalf("index not empty after removing %q", pattern)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"abc-1", "abcdefghij-0", "a_B9-18446744073709551615", "", "-", "abc-", "-1", "a-b-1",
		"abc-18446744073709551616", "abc-01", "abc-+1", "ab.c-1", strings.Repeat("e", 126) + "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("ParseCursor(%q) error %v is not ErrBadCursor", s, err)
			}
			return
		}
		if c.Epoch == "" || strings.ContainsAny(c.Epoch, "-.") {
			t.Fatalf("ParseCursor(%q) accepted epoch %q", s, c.Epoch)
		}
		again, err := ParseCursor(c.String())
		if err != nil || again != c {
			t.Fatalf("cursor %q -> %+v does not round-trip through %q: %+v, %v", s, c, c.String(), again, err)
		}
		if string(c.AppendText(nil)) != c.String() {
			t.Fatalf("AppendText differs from String for %+v", c)
		}
	})
}

func FuzzDraftNormalize(f *testing.F) {
	for _, c := range []struct{ topic, typ, data string }{
		{"a", "", ""},
		{"a.b", "t", "{ \"a\" : [1, 2 ]\n}"},
		{"a", "herald.x", "1"},
		{"a", "x", "{"},
		{"a", "x", "1 2"},
		{"a", "x", "\"\\u2028\u2028\""},
		{"a", "x", " \t\r\n "},
		{"a.*", "x", "null"},
		{"a", strings.Repeat("t", 65), "[]"},
	} {
		f.Add(c.topic, c.typ, []byte(c.data))
	}
	f.Fuzz(func(t *testing.T, topic, typ string, data []byte) {
		d := Draft{Topic: topic, Type: typ, Data: slices.Clone(data)}
		err := d.Normalize()
		if err != nil {
			if !errors.Is(err, ErrInvalidTopic) && !errors.Is(err, ErrInvalidType) && !errors.Is(err, ErrInvalidData) {
				t.Fatalf("Normalize error %v has no sentinel", err)
			}
			return
		}
		if d.Topic != topic || ValidateTopic(d.Topic) != nil || ValidateType(d.Type) != nil {
			t.Fatalf("accepted draft %+v", d)
		}
		if typ != "" && d.Type != typ || typ == "" && d.Type != DefaultType {
			t.Fatalf("type %q became %q", typ, d.Type)
		}
		if bytes.ContainsAny(d.Data, "\r\n") || !json.Valid(d.Data) || !utf8.Valid(d.Data) {
			t.Fatalf("data %q became %q: not one line of UTF-8 JSON", data, d.Data)
		}
		// Normalizing is idempotent, and the envelope is one line of valid JSON
		// that decodes back to the same event.
		again := d
		if err := again.Normalize(); err != nil || !bytes.Equal(again.Data, d.Data) {
			t.Fatalf("second Normalize changed %q to %q (%v)", d.Data, again.Data, err)
		}
		ev := Event{ID: Cursor{Epoch: "e", Seq: 1}, Topic: d.Topic, Type: d.Type, Data: d.Data}
		env := ev.AppendJSON(nil)
		if bytes.ContainsAny(env, "\r\n") || !json.Valid(env) {
			t.Fatalf("envelope %q is not one line of JSON", env)
		}
		var back Event
		if err := json.Unmarshal(env, &back); err != nil || back.Topic != ev.Topic || back.Type != ev.Type {
			t.Fatalf("envelope %s does not decode: %v", env, err)
		}
		if !json.Valid(data) && len(bytes.TrimSpace(data)) > 0 {
			t.Fatalf("accepted data %q that is not JSON", data)
		}
		if !bytes.Equal(back.Data, d.Data) {
			t.Fatalf("data %q decoded from the envelope as %q", d.Data, back.Data)
		}
		// Whichever way Normalize takes (data that is compact already is
		// kept), the data is what json.Compact makes of it.
		var want bytes.Buffer
		if len(bytes.Trim(data, " \t\r\n")) > 0 {
			if err := json.Compact(&want, data); err != nil || !bytes.Equal(d.Data, want.Bytes()) {
				t.Fatalf("data %q became %q, json.Compact makes %q (%v)", data, d.Data, want.Bytes(), err)
			}
		}
	})
}

// FuzzPatternCovers checks that Covers never grants more than it should:
// if p covers q, every topic q matches is matched by p. A grant check built
// on it must not let a subscriber see a topic outside its grant.
func FuzzPatternCovers(f *testing.F) {
	f.Add("a.>", "a.*.c", "a.b.c")
	f.Add("a.*", "a.>", "a.b.c")
	f.Add("*.b", "a.*", "a.c")
	f.Add(">", "x", "x")
	f.Fuzz(func(t *testing.T, ps, qs, topic string) {
		p, err1 := ParsePattern(ps)
		q, err2 := ParsePattern(qs)
		if err1 != nil || err2 != nil || ValidateTopic(topic) != nil {
			return
		}
		if p.Covers(q) && q.Match(topic) && !p.Match(topic) {
			t.Fatalf("%q covers %q, which matches %q, but %q does not", ps, qs, topic, ps)
		}
		if q.Literal() && p.Match(qs) != p.Covers(q) {
			t.Fatalf("%q matches the topic %q: %v, but covers it: %v", ps, qs, p.Match(qs), p.Covers(q))
		}
	})
}
