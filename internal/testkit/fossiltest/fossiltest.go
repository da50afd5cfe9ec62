// Package fossiltest writes the pieces of fossil deltas by hand, for tests
// that need deltas no encoder makes: ones that expand far past their size.
package fossiltest

import "encoding/binary"

// AppendInt appends v in the fossil format's base 64, most significant
// digit first.
func AppendInt(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
	var buf [6]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&63]
		if v >>= 6; v == 0 {
			break
		}
	}
	return append(b, buf[i:]...)
}

// Checksum is the fossil format's checksum of a delta's result: the sum of
// its big-endian 32-bit words, the last one padded with zeros.
func Checksum(b []byte) uint32 {
	var sum uint32
	for ; len(b) >= 4; b = b[4:] {
		sum += binary.BigEndian.Uint32(b)
	}
	var tail [4]byte
	copy(tail[:], b)
	return sum + binary.BigEndian.Uint32(tail[:])
}
