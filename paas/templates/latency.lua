-- Response-time histograms per app and server slot, kept inside HAProxy (loaded by the
-- router's haproxy.cfg). HAProxy 2.6's Prometheus exporter has only an average response time;
-- this adds buckets, so Prometheus can give p50 and p95 (histogram_quantile). Timed from the
-- request's arrival in the `apps` frontend to the server's response headers, per backend
-- (`app_<name>`) and server slot (`sN`: the same names as the exporter's, which the router's
-- paas_router_server_info ties to an instance address, so to a release), and served as
-- `paas_haproxy_response_seconds{app, server}` on the exporter's port at /latency. A slot
-- count is bounded by the app's replicas. Counts start again with each HAProxy worker (a
-- reload); Prometheus' rate() takes counter resets.
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
  local app = string.match(txn.f:be_name() or "", "^app_(.+)$")
  local server = txn.f:srv_name()
  if app == nil or server == nil then
    return
  end
  local key = app .. "\t" .. server
  local s = stats[key]
  if s == nil then
    s = {app = app, server = server, counts = {}, sum = 0, count = 0}
    for i = 1, #buckets do
      s.counts[i] = 0
    end
    stats[key] = s
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
  for _, s in pairs(stats) do
    local labels = string.format('app="%s",server="%s"', s.app, s.server)
    for i = 1, #buckets do
      out[#out + 1] = string.format('%s_bucket{%s,le="%s"} %d', name, labels,
                                    tostring(buckets[i]), s.counts[i])
    end
    out[#out + 1] = string.format('%s_bucket{%s,le="+Inf"} %d', name, labels, s.count)
    out[#out + 1] = string.format('%s_sum{%s} %.6f', name, labels, s.sum)
    out[#out + 1] = string.format('%s_count{%s} %d', name, labels, s.count)
  end
  local body = table.concat(out, "\n") .. "\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain; version=0.0.4")
  applet:add_header("content-length", string.len(body))
  applet:start_response()
  applet:send(body)
end)
