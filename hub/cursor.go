package hub

import (
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
)

// ErrBadCursor is returned by ParseCursor for text that is not a cursor.
var ErrBadCursor = errors.New("malformed cursor")

// Cursor names a position in the hub's single total order of events.
//
// Epoch identifies one incarnation of the log (a memory hub draws a fresh one
// at every start; a clustered broker keeps one for as long as its log lives);
// Seq counts events within it, starting at 1. Seq 0 is the position before the
// first event. The text form "EPOCH-SEQ" is opaque to clients.
type Cursor struct {
	Epoch string
	Seq   uint64
}

// String returns the cursor's wire form.
func (c Cursor) String() string {
	return c.Epoch + "-" + strconv.FormatUint(c.Seq, 10)
}

// AppendText appends the wire form to b without an intermediate string.
func (c Cursor) AppendText(b []byte) []byte {
	b = append(b, c.Epoch...)
	b = append(b, '-')
	return strconv.AppendUint(b, c.Seq, 10)
}

// ParseCursor parses the wire form produced by Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 || i == len(s)-1 || len(s) > 128 {
		return Cursor{}, ErrBadCursor
	}
	epoch := s[:i]
	for j := 0; j < len(epoch); j++ {
		if !segmentByte(epoch[j]) || epoch[j] == '-' {
			return Cursor{}, ErrBadCursor
		}
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{Epoch: epoch, Seq: seq}, nil
}

// NewEpoch draws a random epoch: 10 characters of lowercase base32, so two
// incarnations of a log practically never share one.
func NewEpoch() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return string(b[:])
}
