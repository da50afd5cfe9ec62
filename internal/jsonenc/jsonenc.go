// Package jsonenc appends JSON strings without reflection, for the few hot
// answers Herald writes by hand.
package jsonenc

import "encoding/json"

// AppendString appends s as a JSON string, exactly as encoding/json would
// encode it: HTML-significant characters and invalid UTF-8 included. The
// common case, printable ASCII with nothing to escape, is copied as is.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
