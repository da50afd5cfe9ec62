// Package payload makes the event data that tests of deltas and
// compression publish: realistic dashboard objects of which one field
// changes from one event to the next.
package payload

import (
	"fmt"
	"strings"
)

// Dashboard is a JSON object of about 4 KB, with non-ASCII text, of which
// only "n" changes with n.
func Dashboard(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"n":%d`, n)
	for i := range 60 {
		fmt.Fprintf(&b, `,"metric_%02d":{"label":"Requests per second, région %d","value":%d}`, i, i, 1000+i)
	}
	return b.String() + "}"
}
