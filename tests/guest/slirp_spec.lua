-- A real Linux guest (QEMU, virtio-net, -netdev stream) whose only network
-- is netbe's slirp backend: `netbe wire 'stream,listen=unix:S' 'slirp,...'`
-- runs in a namespace with only a loopback (no route off the machine), and
-- QEMU runs there too. The guest takes a DHCP lease, fetches a page from a
-- web server on that namespace's loopback, and serves a TCP connection that
-- comes in through hostfwd.
local ns = require("ns")
local guest = require("guest")

local skip = guest.skip_unless_ready() or ns.skip_unless_root("busybox", "socat")

local PAGE = "served-from-the-host-loopback"

local SCRIPT = [[
dhcp
wget -q -O - http://10.0.2.2:8080/index.html && echo GUEST-HTTP-DONE
echo hello-from-the-guest | nc -l -p 22 &
echo GUEST-LISTENING
i=0; while [ ! -e /tmp/never ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
]]

-- Processes started here, stopped after each test.
local started = {}
local function stop_started()
  for _, pid in ipairs(started) do ns.kill(pid) end
  started = {}
end

describe("a QEMU guest on netbe's slirp backend #guest", function()
  after_each(stop_started)
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("gets a lease, fetches from the host's loopback and is reached through hostfwd", function()
    local h = ns.new("slq")
    local dir = ns.tmpdir()
    local sock = dir .. "/qemu.sock"
    local f = assert(io.open(dir .. "/index.html", "w"))
    f:write(PAGE, "\n")
    f:close()
    local wire_pid, wire_log = h:spawn("exec " .. ns.netbe .. " wire " ..
      ns.quote("stream,listen=unix:" .. sock) .. " " ..
      ns.quote("slirp,open,hostfwd=tcp:127.0.0.1:2222-:22") .. " --allow-files " .. dir)
    started[#started + 1] = wire_pid
    assert(ns.wait_for("test -S " .. sock, 10), ns.read(wire_log))
    started[#started + 1] = h:spawn("exec busybox httpd -f -p 127.0.0.1:8080 -h " .. dir)

    local g = guest.start{
      netdev = "stream,id=n0,server=off,addr.type=unix,addr.path=" .. sock,
      script = SCRIPT, ns = h}
    started[#started + 1] = g.pid

    assert.truthy(g:wait_for("LEASE ip=%S+ router=%S+ dns=%S+", 90), g:transcript())
    local ip, router, dns = g:output():match("LEASE ip=(%S+) router=(%S+) dns=(%S+)")
    assert.same({"10.0.2.15", "10.0.2.2", "10.0.2.3"}, {ip, router, dns})

    assert.truthy(g:wait_for("GUEST%-HTTP%-DONE", 60), g:transcript())
    assert.truthy(g:output():find(PAGE, 1, true), g:transcript())

    assert.truthy(g:wait_for("GUEST%-LISTENING", 30), g:transcript())
    local got
    assert.is_true(ns.wait_for(function()
      local _, out = h:exec("socat -T 3 - TCP:127.0.0.1:2222 </dev/null")
      got = out
      return out:match("hello%-from%-the%-guest")
    end, 20), "no answer through hostfwd: " .. tostring(got))
  end)
end)
