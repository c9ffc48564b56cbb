# ruby-hello, the ruby stack's example: a Rack app served by WEBrick on $PORT (the stack's
# default start, `exec bundle exec rackup -p $PORT -o 0.0.0.0`). /health and / (the release and
# instance, then GREETING when set).
require "socket"

RELEASE = "v#{ENV.fetch('PAAS_RELEASE', '0')}"
INSTANCE = ENV.fetch("PAAS_INSTANCE_ID") { Socket.gethostname }
TEXT = { "content-type" => "text/plain" }.freeze

# One line on start, which `paas logs` shows.
$stdout.sync = true
puts "ruby-hello #{RELEASE} instance #{INSTANCE} starting on port #{ENV.fetch('PORT', '5000')}"

run(lambda do |env|
  case env["PATH_INFO"]
  when "/health"
    [200, TEXT, ["ok\n"]]
  when "/"
    lines = ["hello from #{RELEASE} instance #{INSTANCE}"]
    lines << ENV["GREETING"] if ENV["GREETING"]
    [200, TEXT, [lines.join("\n") + "\n"]]
  else
    [404, TEXT, ["not found\n"]]
  end
end)
