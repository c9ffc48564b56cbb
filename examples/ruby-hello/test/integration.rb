# Integration test of ruby-hello, run by the platform from the image against the control
# instance of a new release (PAAS_TARGET_URL). Plain ruby (net/http): one case per endpoint;
# exits 1 when any case fails.
require "net/http"
require "uri"

base = ENV.fetch("PAAS_TARGET_URL", "").sub(%r{/+\z}, "")
if base.empty?
  warn "PAAS_TARGET_URL must name the instance under test, e.g. http://127.0.0.1:5000"
  exit 2
end

cases = [
  { name: "health", path: "/health", status: 200, body: "ok" },
  { name: "home", path: "/", status: 200, body: "hello from v" },
  { name: "unknown path", path: "/no-such-page", status: 404, body: "" },
]
if ENV["PAAS_RELEASE"]
  cases << { name: "serves this release", path: "/", status: 200,
             body: "hello from v#{ENV['PAAS_RELEASE']} " }
end

failed = 0
cases.each do |c|
  uri = URI(base + c[:path])
  res = Net::HTTP.start(uri.host, uri.port, open_timeout: 5, read_timeout: 5) do |http|
    http.get(uri.request_uri)
  end
  raise "GET #{c[:path]} answered #{res.code}, want #{c[:status]}" if res.code.to_i != c[:status]
  unless res.body.include?(c[:body])
    raise "GET #{c[:path]}: body lacks #{c[:body].inspect}: #{res.body}"
  end
  puts "ok   #{c[:name]}"
rescue StandardError => e
  failed += 1
  puts "FAIL #{c[:name]}: #{e.message}"
end
puts "#{cases.size - failed} passed, #{failed} failed"
exit(failed.zero? ? 0 : 1)
