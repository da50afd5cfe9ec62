package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// FuzzParseControl: any body gets a control operation that the hub
// accepts, or a 400 with the protocol's codes; a body it accepts says
// what it decoded.
func FuzzParseControl(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice"}`, `{"client":"abc-1z"}`, `{"user":"a","topics":["orders.*","b.>"]}`,
		`{"user":"a","client":"b"}`, `{}`, `[]`, `{"user":5}`, `{"user":"a","topics":null}`,
		`{"user":"a","topics":[]}`, `{"user":"a","topics":["a..b"]}`, "{\"user\":\"\xff\"}", ` {"user":"\u00e9"} `,
		`{"user":"a","topics":[1]}`, `{"user":null,"client":"x"}`,
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, body string, unsubscribe bool) {
		op := hub.ControlDisconnect
		if unsubscribe {
			op = hub.ControlUnsubscribe
		}
		c, err := parseControl(op, []byte(body))
		if err != nil {
			if err.Status != http.StatusBadRequest {
				t.Fatalf("%q: status %d, want 400", body, err.Status)
			}
			switch err.Code {
			case "invalid_json", "invalid_request", "invalid_pattern":
			default:
				t.Fatalf("%q: code %q", body, err.Code)
			}
			return
		}
		if verr := hub.ValidateControl(c); verr != nil {
			t.Fatalf("%q: parsed %+v, which the hub refuses: %v", body, c, verr)
		}
		var raw struct {
			User, Client *string
		}
		if json.Unmarshal([]byte(body), &raw) != nil {
			t.Fatalf("%q: accepted, but it is not JSON", body)
		}
		if (raw.User != nil && *raw.User != c.User) || (raw.Client != nil && *raw.Client != c.Client) {
			t.Fatalf("%q: parsed user %q client %q", body, c.User, c.Client)
		}
	})
}
