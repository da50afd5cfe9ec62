-- wrk script for the publish benchmarks in docs/benchmarks.md: every request
-- publishes one event, so requests/s is accepted publishes per second.
--
--   wrk -t2 -c64 -d8s --latency -s scripts/wrk-publish.lua http://127.0.0.1:18080/v1/publish

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"topic":"bench.wrk","type":"bench","data":{"order":42,"status":"paid","items":[1,2,3]}}'

done = function(summary, latency, requests)
  -- Any answer but 200 (a 503 from an unreachable broker, for one) counts here.
  io.write(string.format("requests: %d, non-2xx/3xx answers: %d, socket errors: %d\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
