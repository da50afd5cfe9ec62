// Package wsframe encodes WebSocket frame headers (RFC 6455 section 5.2)
// and the handshake's accept key (section 4.2.2). It is the one copy of
// those rules for the code that speaks WebSocket beside coder/websocket: the
// server's data frames (transport/ws) and the load generator's client
// (cmd/herald/internal/bench).
package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
)

// Opcodes (RFC 6455 section 5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Fin is the FIN bit of a frame's first byte: the final frame of a message.
const Fin = 0x80

// MaxHeader is the longest header: 2 bytes, an 8-byte length and a 4-byte
// masking key.
const MaxHeader = 2 + 8 + 4

// AppendHeader appends the header of a frame whose first byte is b0 (FIN,
// reserved bits and opcode) carrying n payload bytes, in the shortest length
// encoding. If masked, the mask bit is set and the caller appends the 4-byte
// masking key and the masked payload.
func AppendHeader(dst []byte, b0 byte, masked bool, n int) []byte {
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n <= 125:
		return append(dst, b0, m|byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, m|126, byte(n>>8), byte(n))
	default:
		return append(dst, b0, m|127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// AcceptKey is the Sec-WebSocket-Accept a server answers the
// Sec-WebSocket-Key key with.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// ReadFrame reads one frame from r and returns its first byte (FIN,
// reserved bits and opcode), whether it was masked, and its payload,
// unmasked. A payload over limit bytes is an error. It allocates the
// payload: it is for tests, which read frames one by one, not for a hot path.
func ReadFrame(r io.Reader, limit uint64) (b0 byte, masked bool, payload []byte, err error) {
	var h [MaxHeader]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return 0, false, nil, fmt.Errorf("failed to read frame header: %w", err)
	}
	masked = h[1]&0x80 != 0
	n := uint64(h[1] & 0x7F)
	ext, keyLen := 0, 0
	switch n {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if masked {
		keyLen = 4
	}
	rest := h[2 : 2+ext+keyLen]
	if _, err := io.ReadFull(r, rest); err != nil {
		return 0, false, nil, fmt.Errorf("failed to read frame header: %w", err)
	}
	switch ext {
	case 2:
		n = uint64(binary.BigEndian.Uint16(rest))
	case 8:
		n = binary.BigEndian.Uint64(rest)
	}
	if n > limit {
		return 0, false, nil, fmt.Errorf("failed to read frame: %d bytes is over the limit of %d", n, limit)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, false, nil, fmt.Errorf("failed to read frame payload: %w", err)
	}
	if masked {
		key := rest[ext:]
		for i := range payload {
			payload[i] ^= key[i&3]
		}
	}
	return h[0], masked, payload, nil
}
