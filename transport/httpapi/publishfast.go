package httpapi

import "github.com/heraldpush/herald/hub"

// parseSingleFast decodes the common publish body, one event written as
// {"topic":"…","type":"…","data":…}, without encoding/json's reflection,
// which was the largest part of the publish path after the socket.
//
// It accepts a strict subset of what parsePublish accepts: the three keys
// in any order, each at most once, spelled exactly so and without escapes;
// topic and type as strings without escapes or control bytes; any data
// value, whose syntax json.Compact checks in Normalize. Anything else, and
// any event that fails validation, reports false, and the caller decodes
// the body with encoding/json, which also words the error. So for every
// body this function accepts, the draft is the one parsePublish would
// produce (FuzzParseSingleFast checks that).
func parseSingleFast(body []byte) (hub.Draft, bool) {
	var d hub.Draft
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return d, false
	}
	i = skipSpace(body, i+1)
	var haveTopic, haveType, haveData bool
	for {
		if i >= len(body) || body[i] != '"' {
			return d, false
		}
		key, next, ok := plainString(body, i)
		if !ok {
			return d, false
		}
		i = skipSpace(body, next)
		if i >= len(body) || body[i] != ':' {
			return d, false
		}
		i = skipSpace(body, i+1)
		switch string(key) {
		case "topic", "type":
			if i >= len(body) || body[i] != '"' {
				return d, false
			}
			v, next, ok := plainString(body, i)
			if !ok {
				return d, false
			}
			if key[1] == 'o' {
				if haveTopic {
					return d, false
				}
				haveTopic, d.Topic = true, string(v)
			} else {
				if haveType {
					return d, false
				}
				haveType, d.Type = true, string(v)
			}
			i = next
		case "data":
			if haveData {
				return d, false
			}
			end := skipValue(body, i)
			if end < 0 {
				return d, false
			}
			haveData, d.Data = true, body[i:end]
			i = end
		default:
			return d, false
		}
		i = skipSpace(body, i)
		if i >= len(body) {
			return d, false
		}
		if body[i] == '}' {
			i++
			break
		}
		if body[i] != ',' {
			return d, false
		}
		i = skipSpace(body, i+1)
	}
	if skipSpace(body, i) != len(body) || !haveTopic {
		return d, false
	}
	if err := d.Normalize(); err != nil {
		return d, false
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
	default:
		// A number or a literal: up to the next delimiter, and not empty.
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if j == i {
					return -1
				}
				return j
			}
			j++
		}
		return j
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
