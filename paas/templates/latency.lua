-- Response-time histograms per app, kept inside HAProxy (loaded by the router's haproxy.cfg).
-- HAProxy 2.6's Prometheus exporter has only an average response time; this adds buckets, so
-- Prometheus can give p50 and p95 (histogram_quantile). Timed from the request's arrival in
-- the `apps` frontend to the server's response headers, per backend (`app_<name>`), and
-- served as `paas_haproxy_response_seconds` on the exporter's port at /latency. Counts start
-- again with each HAProxy worker (a reload); Prometheus' rate() takes counter resets.
local buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
local stats = {}

local function now_us()
  local t = core.now()
  return t.sec * 1000000 + t.usec
end

core.register_action("paas_start", {"http-req"}, function(txn)
  txn:set_var("txn.paas_t0", now_us())
end)

core.register_action("paas_observe", {"http-res"}, function(txn)
  local t0 = txn:get_var("txn.paas_t0")
  if t0 == nil then
    return
  end
  local elapsed = (now_us() - t0) / 1000000
  local backend = txn.f:be_name()
  local s = stats[backend]
  if s == nil then
    s = {counts = {}, sum = 0, count = 0}
    for i = 1, #buckets do
      s.counts[i] = 0
    end
    stats[backend] = s
  end
  for i = 1, #buckets do
    if elapsed <= buckets[i] then
      s.counts[i] = s.counts[i] + 1
    end
  end
  s.sum = s.sum + elapsed
  s.count = s.count + 1
end)

core.register_service("paas_latency", "http", function(applet)
  local name = "paas_haproxy_response_seconds"
  local out = {
    "# HELP " .. name .. " Time from a request's arrival to its server's response headers.",
    "# TYPE " .. name .. " histogram",
  }
  for backend, s in pairs(stats) do
    local app = string.match(backend, "^app_(.+)$")
    if app ~= nil then
      for i = 1, #buckets do
        out[#out + 1] = string.format('%s_bucket{app="%s",le="%s"} %d', name, app,
                                      tostring(buckets[i]), s.counts[i])
      end
      out[#out + 1] = string.format('%s_bucket{app="%s",le="+Inf"} %d', name, app, s.count)
      out[#out + 1] = string.format('%s_sum{app="%s"} %.6f', name, app, s.sum)
      out[#out + 1] = string.format('%s_count{app="%s"} %d', name, app, s.count)
    end
  end
  local body = table.concat(out, "\n") .. "\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain; version=0.0.4")
  applet:add_header("content-length", string.len(body))
  applet:start_response()
  applet:send(body)
end)
