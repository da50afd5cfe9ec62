package httpapi

import (
	"net/http"
	"net/url"

	"github.com/heraldpush/herald/apierror"
)

// withReadableQuery answers 400 invalid_request for a query that net/url
// cannot parse whole: more parameters than it parses (10,000, GODEBUG
// urlmaxqueryparams), a ";" separator or a bad %-escape. URL.Query drops
// such parts, or past the limit the whole query, without a word, and the
// handlers would then answer a question the client did not ask: a stream
// "without" its topic=, history that ignores after= and limit=, a request
// that has lost its access_token. Refusing it whole, before any handler
// reads the query, is the one place that covers every endpoint.
func withReadableQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
				apierror.Write(w, apierror.New(http.StatusBadRequest, apierror.InvalidRequest,
					"failed to parse the query: "+err.Error()))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
