package ws_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/transport/ws"
)

// TestInvalidUTF8TextCloses1007 sends text messages that are not UTF-8:
// the server fails the connection with 1007 (RFC 6455 section 8.1) instead
// of handling them, and so never echoes their bytes (a ref goes back as it
// came). Text that is UTF-8 once its frames are joined is a message like
// any other.
func TestInvalidUTF8TextCloses1007(t *testing.T) {
	e := newEnv(t, envOptions{})
	for name, msg := range map[string]string{
		"in the ref":        "{\"op\":\"ping\",\"ref\":\"\xff\"}",
		"in a topic":        "{\"op\":\"subscribe\",\"topics\":[\"a\xc3\"]}",
		"surrogate half":    "{\"op\":\"ping\",\"ref\":\"\xed\xa0\x80\"}",
		"overlong encoding": "{\"op\":\"ping\",\"ref\":\"\xc0\xaf\"}",
		"not JSON either":   "\xfe\xff",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := e.tryDial(t, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.roundTrip("before")
			c.send(msg)
			if got := c.closeStatus(10 * time.Second); got != websocket.StatusInvalidFramePayloadData {
				t.Errorf("after %q: close status %v, want 1007", msg, got)
			}
		})
	}

	t.Run("a rune split across frames", func(t *testing.T) {
		first := clientFrame(0x1, []byte("{\"op\":\"ping\",\"ref\":\"\xc3"))
		first[0] &^= 0x80 // not the last frame of the message
		r := e.rawDial(nil, first, clientFrame(0x0, []byte("\xa9\"}")))
		if f := r.readText(); f.Op != "pong" || string(f.Ref) != `"é"` {
			t.Errorf("got %s, want the pong with ref \"é\"", f)
		}
	})
}

// TestCloseReasonsAreUTF8 checks the close frames the server sends: each
// reason is UTF-8 and at most 123 bytes, whether the server answers a
// peer's close (whose reason it would otherwise repeat) or states its own
// reason, which may quote what the client sent.
func TestCloseReasonsAreUTF8(t *testing.T) {
	t.Run("answer to a close whose reason is not UTF-8", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		r := e.rawDial(nil)
		if _, err := r.nc.Write(clientFrame(0x8, append(binary.BigEndian.AppendUint16(nil, 1000), "bye \xff\xfe"...))); err != nil {
			t.Fatal(err)
		}
		code, reason := r.closeFrame()
		if code != 1007 || !utf8.ValidString(reason) {
			t.Errorf("close %d %q, want 1007 with a UTF-8 reason", code, reason)
		}
	})

	t.Run("answer to a close with a UTF-8 reason", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		r := e.rawDial(nil)
		if _, err := r.nc.Write(clientFrame(0x8, append(binary.BigEndian.AppendUint16(nil, 1000), "au revoir, café"...))); err != nil {
			t.Fatal(err)
		}
		if code, reason := r.closeFrame(); code != 1000 || reason != "au revoir, café" {
			t.Errorf("close %d %q, want the peer's 1000 and reason back", code, reason)
		}
	})

	t.Run("refused token quoting its grant", func(t *testing.T) {
		secret := []byte(strings.Repeat("s", 32))
		a, err := auth.New(auth.Config{Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, envOptions{ws: ws.Options{Auth: a}})
		// The refusal quotes the pattern, cut after 64 bytes, inside an é;
		// what follows puts the 120th byte of the message inside a rune.
		for _, pattern := range []string{"a" + strings.Repeat("é", 40), strings.Repeat("é", 60), "ab" + strings.Repeat("é", 40)} {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
				"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
				"herald": map[string]any{"subscribe": []string{pattern}},
			}).SignedString(secret)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, _, err := websocket.Dial(ctx, e.url+"?access_token="+tok, &websocket.DialOptions{HTTPClient: e.http})
			if err != nil {
				cancel()
				t.Fatalf("dial: %v", err)
			}
			_, _, err = c.Read(ctx)
			cancel()
			c.CloseNow()
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation {
				t.Fatalf("pattern %q: %v, want close 1008", pattern, err)
			}
			if !utf8.ValidString(ce.Reason) || len(ce.Reason) > 123 || !strings.HasPrefix(ce.Reason, "unauthorized: ") {
				t.Errorf("pattern %q: close reason %q (%d bytes), want UTF-8 of at most 123 bytes saying why", pattern, ce.Reason, len(ce.Reason))
			}
		}
	})
}

// closeFrame reads frames until the server's close frame and returns its
// code and reason.
func (r *rawConn) closeFrame() (int, string) {
	r.t.Helper()
	for {
		op, p, err := r.read(10 * time.Second)
		if err != nil {
			r.t.Fatalf("no close frame: %v", err)
		}
		if op != 0x8 {
			continue
		}
		if len(p) < 2 {
			r.t.Fatalf("close frame without a code: %q", p)
		}
		return int(binary.BigEndian.Uint16(p)), string(p[2:])
	}
}
