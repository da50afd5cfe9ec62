package hub

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest topic or pattern, in bytes.
const MaxNameLen = 255

// ErrInvalidTopic and ErrInvalidPattern are matched by errors.Is on every
// *NameError, so callers can map them to the protocol's error codes.
var (
	ErrInvalidTopic   = errors.New("invalid topic")
	ErrInvalidPattern = errors.New("invalid pattern")
)

// NameError reports why a topic or pattern was rejected.
type NameError struct {
	Pattern bool   // the name was parsed as a pattern
	Name    string // the rejected name, as given
	Reason  string
}

func (e *NameError) Error() string {
	kind := "topic"
	if e.Pattern {
		kind = "pattern"
	}
	name := e.Name
	if len(name) > 64 {
		name = name[:64] + "…"
	}
	return fmt.Sprintf("invalid %s %q: %s", kind, name, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidTopic) and errors.Is(err, ErrInvalidPattern) work.
func (e *NameError) Is(target error) bool {
	if e.Pattern {
		return target == ErrInvalidPattern
	}
	return target == ErrInvalidTopic
}

// ValidateTopic reports whether s is a topic: dot-separated segments of
// [A-Za-z0-9_-]+, at most MaxNameLen bytes. Wildcards are not allowed.
func ValidateTopic(s string) error {
	if err := checkName(s, false); err != nil {
		return err
	}
	return nil
}

// Pattern is a parsed subscription pattern. A segment may be "*" (exactly
// one segment) and the last segment may be ">" (one or more segments).
// The zero Pattern matches nothing. Patterns are immutable and safe to share.
type Pattern struct {
	raw  string
	wild bool
}

// ParsePattern validates s once; Match then needs no further checks.
func ParsePattern(s string) (Pattern, error) {
	if err := checkName(s, true); err != nil {
		return Pattern{}, err
	}
	return Pattern{raw: s, wild: strings.ContainsAny(s, "*>")}, nil
}

// MustPattern is ParsePattern for literals known to be valid; it panics otherwise.
func MustPattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Literal reports whether the pattern has no wildcard, i.e. names one topic.
func (p Pattern) Literal() bool { return !p.wild }

// Match reports whether topic (a valid topic) matches the pattern.
// It does not allocate.
func (p Pattern) Match(topic string) bool {
	if p.raw == "" {
		return false
	}
	if !p.wild {
		return p.raw == topic
	}
	pat := p.raw
	for {
		ps, prest, pmore := cut(pat)
		if ps == ">" {
			return topic != ""
		}
		if topic == "" {
			return false
		}
		ts, trest, tmore := cut(topic)
		if ps != "*" && ps != ts {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pat, topic = prest, trest
	}
}

// Covers reports whether every topic q matches is matched by p too: a grant
// p allows subscribing to q. It does not allocate.
func (p Pattern) Covers(q Pattern) bool {
	if p.raw == "" || q.raw == "" {
		return false
	}
	if !p.wild {
		return p.raw == q.raw
	}
	pat, sub := p.raw, q.raw
	for {
		ps, prest, pmore := cut(pat)
		if ps == ">" {
			return true // sub has at least this one segment left
		}
		qs, qrest, qmore := cut(sub)
		switch {
		case qs == ">":
			return false // one or more segments, where p takes exactly one
		case ps != "*" && ps != qs:
			return false // a literal covers only itself, not "*"
		}
		if !pmore || !qmore {
			return pmore == qmore
		}
		pat, sub = prest, qrest
	}
}

// cut splits off the first dot-separated segment.
func cut(s string) (seg, rest string, more bool) {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

func checkName(s string, pattern bool) error {
	fail := func(reason string) error { return &NameError{Pattern: pattern, Name: s, Reason: reason} }
	if s == "" {
		return fail("empty")
	}
	if len(s) > MaxNameLen {
		return fail(fmt.Sprintf("longer than %d bytes", MaxNameLen))
	}
	rest := s
	for {
		seg, r, more := cut(rest)
		switch {
		case seg == "":
			return fail("empty segment")
		case pattern && seg == "*":
		case pattern && seg == ">":
			if more {
				return fail(`">" must be the last segment`)
			}
		default:
			for i := 0; i < len(seg); i++ {
				if !segmentByte(seg[i]) {
					if seg[i] == '*' || seg[i] == '>' {
						if !pattern {
							return fail("wildcards are not allowed in a topic")
						}
						return fail("a wildcard must be a whole segment")
					}
					return fail(fmt.Sprintf("byte %q not allowed (segments are [A-Za-z0-9_-]+)", seg[i]))
				}
			}
		}
		if !more {
			return nil
		}
		rest = r
	}
}

func segmentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
