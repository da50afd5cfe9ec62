-- wrk script for the Actions benchmark in docs/benchmarks.md: every request
-- submits one built-in echo action, so requests/s is accepted actions per
-- second, while the workers run every action and publish its result.
--
--   wrk -t2 -c64 -d10s --latency -s scripts/wrk-actions.lua http://127.0.0.1:18090/v1/actions

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"echo","topic":"bench.actions","payload":{"title":"milk","n":42}}'

done = function(summary, latency, requests)
  -- Any answer but 202 (a 503 from a full queue, for one) counts here.
  io.write(string.format("requests: %d, non-2xx/3xx answers: %d, socket errors: %d\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
