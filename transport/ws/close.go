package ws

import (
	"strings"
	"unicode/utf8"

	"github.com/heraldpush/herald/internal/wsframe"
)

// Every close frame the server sends carries a reason that is UTF-8 and fits
// a control frame (RFC 6455 sections 5.5 and 5.5.1); a frame that breaks
// either rule is invalid, and a client fails the connection on it rather
// than reading the close code. Reasons come from two places:
//   - the server's own, some of which quote what a client sent (a refused
//     token's grant names its patterns): closeReason makes them fit;
//   - the peer's, which coder/websocket sends back byte for byte when it
//     answers a close frame: validClose replaces an answer whose reason is
//     not UTF-8.

// maxCloseReason is the longest close reason: a control frame's payload is
// at most 125 bytes, two of them the code.
const maxCloseReason = 125 - 2

// closeReason returns reason as a close frame can carry it: each byte that
// is not part of valid UTF-8 replaced by U+FFFD, and cut on a rune boundary
// to at most maxCloseReason bytes (coder/websocket would send a longer one
// as 1011 with no reason at all).
func closeReason(reason string) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) <= maxCloseReason {
		return reason
	}
	n := maxCloseReason
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// invalidUTF8Close is the close frame, 1007 "invalid UTF-8", that answers
// a peer's close frame whose reason is not UTF-8.
var invalidUTF8Close = func() []byte {
	const reason = "invalid UTF-8"
	return append([]byte{wsframe.Fin | wsframe.OpClose, byte(2 + len(reason)), 1007 >> 8, 1007 & 0xFF}, reason...)
}()

// validClose returns the close frame f, or invalidUTF8Close in its place if
// its reason is not UTF-8: RFC 6455 (section 8.1) has an endpoint that
// receives text that is not UTF-8 fail the connection with 1007, and
// repeating the reason would make the answer itself invalid. f is one whole
// frame as the server sends it: unmasked, so its 2-byte header is followed
// by the code and the reason.
func validClose(f []byte) []byte {
	if len(f) <= 4 || len(f) != 2+int(f[1]&0x7F) || utf8.Valid(f[4:]) {
		return f // no reason, a valid one, or not a frame of that layout
	}
	return invalidUTF8Close
}
