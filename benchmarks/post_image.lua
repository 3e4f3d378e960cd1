-- wrk script: POST one image as multipart field "file"; IMAGE and TARGET_PATH come from the environment.
-- Prints one JSON line with throughput, latency percentiles and status counts.
local path = os.getenv("IMAGE")
local handle = assert(io.open(path, "rb"))
local data = handle:read("*all")
handle:close()
local boundary = "----medscan-bench-boundary"
wrk.method = "POST"
wrk.path = os.getenv("TARGET_PATH") or "/predict/malaria"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"" .. (os.getenv("FIELD") or "file") .. "\"; filename=\"image\"\r\n"
  .. "Content-Type: " .. (os.getenv("CONTENT_TYPE") or "application/octet-stream") .. "\r\n\r\n"
  .. data .. "\r\n--" .. boundary .. "--\r\n"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, overloaded, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then overloaded = overloaded + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local n200, n503, nother = 0, 0, 0
  for _, thread in ipairs(threads) do
    n200 = n200 + thread:get("ok")
    n503 = n503 + thread:get("overloaded")
    nother = nother + thread:get("other")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "requests_per_second": %.1f, "status_200": %d, "status_503": %d, '
    .. '"status_other": %d, "socket_errors": %d, "timeouts": %d, '
    .. '"latency_ms": {"p50": %.2f, "p95": %.2f, "p99": %.2f, "max": %.2f}}\n',
    summary.requests, seconds, summary.requests / seconds, n200, n503, nother,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
