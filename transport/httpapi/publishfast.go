package httpapi

import "github.com/heraldpush/herald/hub"

// flatObject is a JSON object of at most four members: "topic", "type"
// and "key", strings, and one more member of any JSON value, kept raw.
type flatObject struct {
	topic, typ, key           string
	raw                       []byte
	hasTopic, hasType, hasKey bool
	hasRaw                    bool
}

// parseFlatObject decodes the common request bodies, {"topic":"…",
// "type":"…", "key":"…", rawKey:…}, without encoding/json's reflection,
// which was the largest part of the publish and action paths after the
// socket.
//
// It accepts a strict subset of what encoding/json accepts: the four keys
// in any order, each at most once, spelled exactly so and without escapes;
// topic, type and key as strings without escapes or control bytes; and a
// raw value whose syntax the caller checks. Anything else reports false, and
// the caller decodes the body with encoding/json, which also words the
// error.
func parseFlatObject(body []byte, rawKey string) (flatObject, bool) {
	var o flatObject
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return o, false
	}
	i = skipSpace(body, i+1)
	for {
		if i >= len(body) || body[i] != '"' {
			return o, false
		}
		key, next, ok := plainString(body, i)
		if !ok {
			return o, false
		}
		i = skipSpace(body, next)
		if i >= len(body) || body[i] != ':' {
			return o, false
		}
		i = skipSpace(body, i+1)
		switch k := string(key); {
		case k == "topic" || k == "type" || k == "key":
			if i >= len(body) || body[i] != '"' {
				return o, false
			}
			v, next, ok := plainString(body, i)
			if !ok {
				return o, false
			}
			dst, seen := &o.topic, &o.hasTopic
			switch k {
			case "type":
				dst, seen = &o.typ, &o.hasType
			case "key":
				dst, seen = &o.key, &o.hasKey
			}
			if *seen {
				return o, false
			}
			*seen, *dst = true, string(v)
			i = next
		case k == rawKey:
			if o.hasRaw {
				return o, false
			}
			end := skipValue(body, i)
			if end < 0 {
				return o, false
			}
			o.hasRaw, o.raw = true, body[i:end]
			i = end
		default:
			return o, false
		}
		i = skipSpace(body, i)
		if i >= len(body) {
			return o, false
		}
		if body[i] == '}' {
			i++
			break
		}
		if body[i] != ',' {
			return o, false
		}
		i = skipSpace(body, i+1)
	}
	return o, skipSpace(body, i) == len(body)
}

// parseSingleFast decodes a one-event publish body with parseFlatObject.
// For every body it accepts, the draft is the one parsePublish would
// produce through encoding/json (FuzzParseSingleFast checks that); it
// declines an event that fails validation, so that the error is worded
// the usual way.
func parseSingleFast(body []byte) (hub.Draft, bool) {
	o, ok := parseFlatObject(body, "data")
	// A key given as "" is refused; leave it to the usual path to say so.
	if !ok || !o.hasTopic || (o.hasKey && o.key == "") {
		return hub.Draft{}, false
	}
	d := hub.Draft{Topic: o.topic, Type: o.typ, Key: o.key, Data: o.raw}
	if err := d.Normalize(); err != nil {
		return hub.Draft{}, false
	}
	return d, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the string starting at b[i] == '"' and returns its
// contents and the index after its closing quote. It fails on an escape or
// a control byte, which the fast path leaves to encoding/json.
func plainString(b []byte, i int) ([]byte, int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipValue returns the index just past the JSON value starting at b[i], or
// -1 if it cannot find its end. It tracks strings and nesting only; the
// value's syntax is checked by whoever uses it.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end := skipString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 't', 'f', 'n':
		// A number or a literal: up to the next delimiter.
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	default:
		return -1
	}
}

// skipString returns the index after the string starting at b[i] == '"',
// or -1 if it is not terminated.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}
