package outbox_test

import (
	"strings"
	"testing"

	"github.com/heraldpush/herald/outbox"
)

// FuzzParseURL: any --source text is parsed or refused with an error,
// never a panic, and a refusal never quotes the URL's password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"postgres://postgres@127.0.0.1:5432/app?table=herald_outbox",
		"postgresql://u:secretpw@h1:5432,h2:5433/db?sslmode=disable&table=s.t&batch=10&poll=250ms",
		"postgres://u:secretpw@/db?host=/var/run/postgresql",
		"postgres://x?table=bad-name", "postgres://x?batch=0", "postgres://x?poll=1ns", "mysql://x", "",
		"postgres://u:secretpw@h/db?connect_timeout=abc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := outbox.ParseURL(s)
		if err != nil {
			if strings.Contains(s, "secretpw") && strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error %q quotes the password", err)
			}
			return
		}
		if st.Batch < 1 || st.Batch > outbox.MaxBatch || st.Poll <= 0 {
			t.Fatalf("accepted %q with settings %+v", s, st)
		}
		if _, err := outbox.ParseTable(st.Table.String()); err != nil {
			t.Fatalf("accepted %q with table %q, which ParseTable refuses: %v", s, st.Table, err)
		}
	})
}
