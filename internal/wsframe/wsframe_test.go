package wsframe

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The example of RFC 6455 section 1.3.
func TestAcceptKey(t *testing.T) {
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey: %s", got)
	}
}

func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		b0     byte
		masked bool
		n      int
		want   []byte
	}{
		{Fin | OpText, false, 0, []byte{0x81, 0}},
		{Fin | OpText, false, 125, []byte{0x81, 125}},
		{Fin | OpText, false, 126, []byte{0x81, 126, 0, 126}},
		{Fin | OpText, false, 65535, []byte{0x81, 126, 0xFF, 0xFF}},
		{Fin | OpText, false, 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{OpBinary, true, 5, []byte{0x02, 0x85}},
		{Fin | OpClose, true, 300, []byte{0x88, 0xFE, 1, 44}},
		{Fin | OpPong, true, 1 << 32, []byte{0x8A, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0}},
	} {
		if got := AppendHeader([]byte{0xEE}, tc.b0, tc.masked, tc.n); !bytes.Equal(got[1:], tc.want) || got[0] != 0xEE {
			t.Errorf("header %#x masked %v for %d: % x, want % x after the prefix", tc.b0, tc.masked, tc.n, got, tc.want)
		}
	}
}

// ReadFrame reads back what AppendHeader encodes, masked or not, and
// refuses a payload over its limit or cut short.
func TestReadFrame(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		for _, m := range []bool{false, true} {
			p := payload(n)
			f := AppendHeader(nil, Fin|OpText, m, n)
			if m {
				f = append(f, key[:]...)
				for i, b := range p {
					f = append(f, b^key[i&3])
				}
			} else {
				f = append(f, p...)
			}
			b0, masked, got, err := ReadFrame(bytes.NewReader(f), 1<<20)
			if err != nil || b0 != Fin|OpText || masked != m || !bytes.Equal(got, p) {
				t.Fatalf("%d bytes, masked %v: read %#x, masked %v, %d bytes, %v", n, m, b0, masked, len(got), err)
			}
			if _, _, _, err := ReadFrame(bytes.NewReader(f[:len(f)-1]), 1<<20); n > 0 && err == nil {
				t.Fatalf("%d bytes, masked %v: a frame cut short was read", n, m)
			}
			if _, _, _, err := ReadFrame(bytes.NewReader(f), uint64(n)-1); n > 0 && err == nil {
				t.Fatalf("%d bytes, masked %v: read over a limit of %d", n, m, n-1)
			}
		}
	}
}

// What AppendHeader writes, a real WebSocket implementation reads: unmasked
// frames of every length encoding sent to coder/websocket's client.
func TestHeadersReadByCoderWebSocket(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 1000, 65535, 65536, 70000}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		for _, n := range sizes {
			_, _ = brw.Write(AppendHeader(nil, Fin|OpText, false, n))
			_, _ = brw.Write(bytes.Repeat([]byte{'x'}, n))
		}
		_ = brw.Flush()
		_, _ = bufio.NewReader(c).ReadByte() // until the client leaves
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	for _, n := range sizes {
		typ, b, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageText || len(b) != n {
			t.Fatalf("frame of %d bytes: read %v, %d bytes, %v", n, typ, len(b), err)
		}
	}
}

// Masked frames of every length encoding, as a client sends them, read by
// coder/websocket's server.
func TestMaskedHeadersReadByCoderWebSocket(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 1000, 65535, 65536, 70000}
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			got <- err
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(-1)
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		for _, n := range sizes {
			typ, b, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || !bytes.Equal(b, payload(n)) {
				got <- fmt.Errorf("frame of %d bytes: read %v, %d bytes, %v", n, typ, len(b), err)
				return
			}
		}
		got <- nil
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	var stream []byte
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range sizes {
		stream = AppendHeader(stream, Fin|OpBinary, true, n)
		stream = append(stream, key[:]...)
		for i, b := range payload(n) {
			stream = append(stream, b^key[i&3])
		}
	}
	go func() { _, _ = conn.Write(stream) }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("coder/websocket read no frames")
	}
}

func payload(n int) []byte { return bytes.Repeat([]byte{0xA5}, n) }
