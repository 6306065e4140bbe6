-- A real Linux guest (QEMU, virtio-net) on netbe's stream and dgram
-- backends: QEMU's -netdev stream and -netdev dgram on one side, a tap in a
-- namespace on the other, joined by `netbe wire`.
local ns = require("ns")
local guest = require("guest")

local skip = guest.skip_unless_ready() or ns.skip_unless_root("socat", "md5sum")

-- The guest takes 10.0.9.2, pings the host side, sends 2 MiB over TCP and
-- prints its checksum, then waits for the host to ping it.
local SCRIPT = [[
ip addr add 10.0.9.2/24 dev eth0
ping -c 3 -W 5 10.0.9.1 && echo GUEST-PING-OK
dd if=/dev/urandom of=/tmp/blob bs=1024 count=2048 2>/dev/null
echo "GUEST-SUM=$(md5sum </tmp/blob | cut -d' ' -f1)"
nc 10.0.9.1 5001 </tmp/blob && echo GUEST-SENT
i=0; while [ ! -e /tmp/never ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
]]

-- Runs the guest against SPEC (netbe side) and NETDEV (QEMU side).
local function exercise(spec, netdev, wait_socket)
  local h = ns.new("h")
  local tap = ns.unique("tap")
  local tmp = ns.tmpdir()
  local wire_pid, wire_log = h:spawn(ns.netbe .. " wire " .. ns.quote(spec) .. " " .. tap
                                     .. " --allow-files /tmp")
  assert(ns.wait_for(function() return (h:exec("ip link show " .. tap)) end, 10), ns.read(wire_log))
  assert(h:exec("ip addr add 10.0.9.1/24 dev " .. tap .. " && ip link set " .. tap .. " up"))
  if wait_socket then assert(ns.wait_for("test -S " .. wait_socket, 10), ns.read(wire_log)) end
  h:spawn("socat -u TCP-LISTEN:5001,reuseaddr OPEN:" .. tmp .. "/got,creat,trunc")
  local g = guest.start{netdev = netdev, script = SCRIPT, ns = h}
  assert.truthy(g:wait_for("GUEST%-PING%-OK", 60), g:transcript())
  local sum = g:wait_for("GUEST%-SUM=(%x+)", 30)
  assert.truthy(g:wait_for("GUEST%-SENT", 60), g:transcript())
  assert.truthy(ns.wait_for(function()
    local _, out = ns.sh("md5sum <" .. tmp .. "/got")
    return out:match("^(%x+)") == sum
  end, 10), "the 2 MiB from the guest arrived damaged or short")
  local ok, out = h:exec("ping -c 3 -W 5 10.0.9.2")
  assert(ok, "host to guest ping: " .. out)
  g:stop()
  ns.kill(wire_pid, "INT")
  local frames = tonumber(ns.read(wire_log):match(tap .. "%s+rx_frames=(%d+)"))
  assert.is_true(frames and frames > 100, ns.read(wire_log))
end

describe("a QEMU guest on netbe sockets #guest", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("-netdev stream (QEMU connects, netbe listens on a UNIX socket)", function()
    local sock = ns.tmpdir() .. "/qemu.sock"
    exercise("stream,listen=unix:" .. sock,
             "stream,id=n0,server=off,addr.type=unix,addr.path=" .. sock, sock)
  end)

  it("-netdev stream (QEMU listens on TCP, netbe connects and retries)", function()
    exercise("stream,connect=127.0.0.1:47311,reconnect=1",
             "stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=47311")
  end)

  it("-netdev dgram over UDP", function()
    exercise("dgram,local=127.0.0.1:47321,remote=127.0.0.1:47322",
             "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=47322," ..
             "remote.type=inet,remote.host=127.0.0.1,remote.port=47321")
  end)
end)
