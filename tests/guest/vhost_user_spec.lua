-- examples/vhost-user-net serving real QEMU guests (-accel tcg, guest memory
-- shared through memfd): offloads and mergeable rx buffers negotiated with a
-- tap behind it and data verified both ways (TSO frames spread over
-- several buffers), a guest reboot and a QEMU restart served by the same
-- device process, a stream backend (software offloads), slirp, and bad input on the
-- control socket.
local ns = require("ns")
local vhost = require("vhost")

local MB = 8

-- The i-th negotiated virtio feature bit from the guest's sysfs string.
local function bit(features, i) return features:sub(i + 1, i + 1) == "1" end

local function md5(path)
  local ok, out = ns.sh("md5sum " .. ns.quote(path))
  assert(ok, out)
  return out:match("^(%x+)")
end

-- Frames and bytes the tap TAP in N received from the device (guest-sent).
local function tap_rx(n, tap)
  local _, b = n:exec("cat /sys/class/net/" .. tap .. "/statistics/rx_bytes")
  local _, p = n:exec("cat /sys/class/net/" .. tap .. "/statistics/rx_packets")
  return tonumber(b), tonumber(p)
end

-- Guest shell lines that wait until HOST serves /done on port 8080.
local function until_done(host)
  return "i=0\nwhile ! wget -q -O /dev/null http://" .. host .. ":8080/done 2>/dev/null; do\n" ..
         "  sleep 0.5; i=$((i+1)); [ $i -lt 240 ] || exit 4\ndone\n"
end

-- Average bytes per frame the guest received, from its GUESTRX line.
local function guest_rx_average(g)
  local b0, p0, b1, p1 = g:output():match("GUESTRX=(%d+) (%d+) (%d+) (%d+)")
  return (tonumber(b1) - tonumber(b0)) / math.max(1, tonumber(p1) - tonumber(p0))
end

describe("vhost-user-net with QEMU guests", function()
  after_each(vhost.cleanup)
  teardown(vhost.cleanup)
  local why = vhost.skip_unless_ready()
  if why then
    pending("vhost-user guest tests skipped: " .. why)
    return
  end

  it("negotiates checksum and TSO offloads with a tap and moves " .. MB .. " MB each way intact", function()
    local n = ns.new("vu")
    local tap = ns.unique("tap")
    local dir = ns.tmpdir()
    local sock = dir .. "/vu.sock"
    vhost.device(sock, tap, n)
    vhost.tap_addr(n, tap, "10.201.0.1/24")
    assert(ns.sh("dd if=/dev/urandom of=" .. dir .. "/tx.bin bs=1M count=" .. MB .. " 2>/dev/null"))
    vhost.spawn(n, "exec busybox httpd -f -p 10.201.0.1:8080 -h " .. dir)
    local g = vhost.guest(sock, {timeout = 180, script = [[
ip addr add 10.201.0.2/24 dev eth0
echo "FEATURES=$(cat /sys/bus/virtio/devices/virtio0/features)"
before=$(awk '/eth0:/ { print $2 " " $3 }' /proc/net/dev)
wget -q -O /tmp/in.bin http://10.201.0.1:8080/tx.bin || exit 3
echo "GUESTRX=$before $(awk '/eth0:/ { print $2 " " $3 }' /proc/net/dev)"
echo "RXMD5=$(md5sum /tmp/in.bin | cut -d' ' -f1)"
rm /tmp/in.bin
mkdir -p /www
dd if=/dev/urandom of=/www/out.bin bs=1M count=]] .. MB .. [[ 2>/dev/null
echo "TXMD5=$(md5sum /www/out.bin | cut -d' ' -f1)"
httpd -p 8080 -h /www
echo SERVING
]] .. until_done("10.201.0.1")})
    local features = g:wait_for("FEATURES=([01]+)", 90)
    assert.is_truthy(features, g:transcript())
    assert.is_true(bit(features, 0), "CSUM not negotiated: " .. features)
    assert.is_true(bit(features, 1), "GUEST_CSUM not negotiated: " .. features)
    assert.is_true(bit(features, 7), "GUEST_TSO4 not negotiated: " .. features)
    assert.is_true(bit(features, 11), "HOST_TSO4 not negotiated: " .. features)
    assert.is_true(bit(features, 15), "MRG_RXBUF not negotiated: " .. features)
    assert.is_true(bit(features, 32), "VERSION_1 not negotiated: " .. features)

    -- Namespace -> guest: the tap hands the device TSO frames for the guest.
    local rxmd5 = g:wait_for("RXMD5=(%x+)", 120)
    assert.are.equal(md5(dir .. "/tx.bin"), rxmd5, g:transcript())
    local avg_in = guest_rx_average(g)
    assert.is_true(avg_in > 2000, "guest received frames of " .. avg_in .. " bytes on average: no TSO")

    -- Guest -> namespace: the guest sends TSO frames through to the tap.
    local txmd5 = g:wait_for("TXMD5=(%x+)", 60)
    assert.is_truthy(g:wait_for("SERVING", 30), g:transcript())
    local bytes0, pkts0 = tap_rx(n, tap)
    local ok, out = n:exec("busybox wget -q -O " .. dir .. "/rx.bin http://10.201.0.2:8080/out.bin")
    assert.is_true(ok, out)
    local bytes1, pkts1 = tap_rx(n, tap)
    assert.are.equal(txmd5, md5(dir .. "/rx.bin"))
    local avg_out = (bytes1 - bytes0) / math.max(1, pkts1 - pkts0)
    assert.is_true(avg_out > 2000, "the tap got frames of " .. avg_out .. " bytes on average: no TSO")
    assert(ns.sh("touch " .. dir .. "/done"))
    assert.are.equal(0, g:wait_exit(60), g:transcript())
  end)

  it("serves a guest across a reboot and a QEMU restart without restarting the device", function()
    local n = ns.new("vu")
    local tap = ns.unique("tap")
    local dir = ns.tmpdir()
    local sock = dir .. "/vu.sock"
    local dev_pid, dev_log = vhost.device(sock, tap, n)
    vhost.tap_addr(n, tap, "10.202.0.1/24")
    assert(ns.sh("echo netbe-hello >" .. dir .. "/hello.txt"))
    vhost.spawn(n, "exec busybox httpd -f -p 10.202.0.1:8080 -h " .. dir)
    local script = [[
ip addr add 10.202.0.2/24 dev eth0
wget -q -O - http://10.202.0.1:8080/hello.txt | grep -q netbe-hello && echo "ROUND-OK"
]]
    -- First QEMU: the guest reboots after each round (-action overrides -no-reboot).
    local g1 = vhost.guest(sock, {script = script .. "reboot -f\n",
                                  extra = {"-action", "reboot=reset"}})
    local rounds = 0
    ns.wait_for(function()
      rounds = vhost.count(g1:output(), "ROUND%-OK")
      return rounds >= 2 or not g1:running()
    end, 180)
    assert.are.equal(2, math.min(rounds, 2), "rounds before and after reboot: " .. g1:transcript())
    g1:stop()
    assert.is_true(ns.alive(dev_pid), "the device died with QEMU: " .. vhost.log(dev_log))

    -- Second QEMU on the same socket, same device process.
    local g2 = vhost.guest(sock, {script = script})
    assert.are.equal(0, g2:wait_exit(120), g2:transcript() .. "\ndevice: " .. vhost.log(dev_log))
    assert.is_truthy(g2:output():find("ROUND-OK", 1, true))
    assert.is_true(ns.alive(dev_pid))
    assert.are.equal(2, vhost.count(vhost.log(dev_log), "vhost%-user%-net: connected"),
      vhost.log(dev_log))
  end)

  it("works with a backend without kernel offloads (stream to a tap through netbe wire)", function()
    local n = ns.new("vu")
    local tap = ns.unique("tap")
    local dir = ns.tmpdir()
    local sock, stream = dir .. "/vu.sock", dir .. "/st.sock"
    vhost.device(sock, "stream,listen=unix:" .. stream, n, "--allow-files " .. dir)
    vhost.spawn(n, "exec " .. ns.netbe .. " wire " .. ns.quote("stream,connect=unix:" .. stream) .. " " .. tap
                .. " --allow-files " .. dir)
    vhost.tap_addr(n, tap, "10.203.0.1/24")
    assert(ns.sh("dd if=/dev/urandom of=" .. dir .. "/tx.bin bs=1M count=2 2>/dev/null"))
    vhost.spawn(n, "exec busybox httpd -f -p 10.203.0.1:8080 -h " .. dir)
    local g = vhost.guest(sock, {script = [[
ip addr add 10.203.0.2/24 dev eth0
echo "FEATURES=$(cat /sys/bus/virtio/devices/virtio0/features)"
wget -q -O /tmp/in.bin http://10.203.0.1:8080/tx.bin || exit 3
echo "RXMD5=$(md5sum /tmp/in.bin | cut -d' ' -f1)"
mkdir -p /www
dd if=/dev/urandom of=/www/out.bin bs=1M count=2 2>/dev/null
echo "TXMD5=$(md5sum /www/out.bin | cut -d' ' -f1)"
httpd -p 8080 -h /www
echo SERVING
]] .. until_done("10.203.0.1")})
    assert.is_truthy(g:wait_for("SERVING", 120), g:transcript())
    local features = g:output():match("FEATURES=([01]+)")
    assert.is_true(bit(features, 32), "VERSION_1 not negotiated")
    assert.are.equal(md5(dir .. "/tx.bin"), g:output():match("RXMD5=(%x+)"))
    -- Whatever the guest sends (TSO frames when offered: netbe segments
    -- them in software for the stream) arrives intact.
    local ok, out = n:exec("busybox wget -q -O " .. dir .. "/rx.bin http://10.203.0.2:8080/out.bin")
    assert.is_true(ok, out)
    assert.are.equal(g:output():match("TXMD5=(%x+)"), md5(dir .. "/rx.bin"))
    assert(ns.sh("touch " .. dir .. "/done"))
    assert.are.equal(0, g:wait_exit(60), g:transcript())
  end)

  it("serves a guest with netbe's slirp behind it: DHCP, " .. MB .. " MB from host loopback in " ..
     "TSO frames, hostfwd in", function()
    if not ns.sh(ns.netbe .. " check slirp") then
      pending("netbe has no slirp backend in this build")
      return
    end
    local n = ns.new("vu")
    local dir = ns.tmpdir()
    local sock = dir .. "/vu.sock"
    assert(ns.sh("dd if=/dev/urandom of=" .. dir .. "/tx.bin bs=1M count=" .. MB .. " 2>/dev/null"))
    vhost.spawn(n, "exec busybox httpd -f -p 127.0.0.1:8080 -h " .. dir)
    -- "open" lets the guest reach the namespace's loopback through 10.0.2.2;
    -- the namespace has no route off the machine.
    vhost.device(sock, "slirp,open,hostfwd=tcp:127.0.0.1:2280-:80", n)
    local g = vhost.guest(sock, {script = [[
dhcp || exit 3
before=$(awk '/eth0:/ { print $2 " " $3 }' /proc/net/dev)
wget -q -O /tmp/in.bin http://10.0.2.2:8080/tx.bin || exit 5
echo "GUESTRX=$before $(awk '/eth0:/ { print $2 " " $3 }' /proc/net/dev)"
echo "RXMD5=$(md5sum /tmp/in.bin | cut -d' ' -f1)"
rm /tmp/in.bin
mkdir -p /www
echo netbe-inbound >/www/in.txt
httpd -p 80 -h /www
echo SERVING
]] .. until_done("10.0.2.2")})
    assert.are.equal("10.0.2.15", g:wait_for("LEASE ip=(%S+)", 90), g:transcript())
    assert.is_truthy(g:wait_for("SERVING", 60), g:transcript())
    -- Host loopback -> guest: slirp's segments reach the guest joined.
    assert.are.equal(md5(dir .. "/tx.bin"), g:output():match("RXMD5=(%x+)"), g:transcript())
    local avg_in = guest_rx_average(g)
    assert.is_true(avg_in > 2000, "guest received frames of " .. avg_in .. " bytes on average: " ..
                   "slirp's segments were not joined")
    local ok, out = n:exec("busybox wget -q -O - http://127.0.0.1:2280/in.txt")
    assert.is_true(ok, out)
    assert.are.equal("netbe-inbound\n", out)
    assert(ns.sh("touch " .. dir .. "/done"))
    assert.are.equal(0, g:wait_exit(60), g:transcript())
  end)

  it("rejects bad command lines and malformed control messages without dying", function()
    local ok, out = ns.sh(ns.quote(vhost.bin) .. " tap0")
    assert.is_false(ok)
    assert.is_truthy(out:find("usage:", 1, true))
    local dir = ns.tmpdir()
    ok, out = ns.sh(ns.quote(vhost.bin) .. " --socket " .. dir .. "/x.sock 'tap0,colour=red'")
    assert.is_false(ok)
    assert.is_truthy(out:find("unknown key 'colour'", 1, true), out)

    local sock = dir .. "/vu.sock"
    local pid, log = vhost.device(sock, "null,mac=02:00:00:aa:bb:cc,mtu=1400")
    -- Send MSG (little-endian u32 fields, then raw bytes) and return the reply as bytes.
    local function send(msg)
      local f = assert(io.open(dir .. "/msg", "wb"))
      f:write(msg)
      f:close()
      local _, out = ns.sh("timeout 5 socat -t 2 - UNIX-CONNECT:" .. sock .. " <" .. dir .. "/msg | od -An -tx1")
      local bytes = {}
      for b in out:gmatch("%x%x") do bytes[#bytes + 1] = tonumber(b, 16) end
      return bytes
    end
    local function hdr(request, size) return string.pack("<I4I4I4", request, 1, size) end
    send("garbage-garbage-garbage")
    -- SET_MEM_TABLE claiming two regions but carrying no memory fds.
    send(hdr(5, 72) .. string.pack("<I4I4", 2, 0) .. string.rep("\0", 64))
    -- SET_VRING_NUM for a ring this single-queue-pair device does not have.
    send(hdr(8, 8) .. string.pack("<I4I4", 7, 256))
    -- SET_FEATURES with a payload of the wrong size.
    send(hdr(2, 4) .. string.pack("<I4", 0))
    assert.is_true(ns.alive(pid), vhost.log(log))
    local text = vhost.log(log)
    assert.is_truthy(text:find("bad message header", 1, true), text)
    assert.is_truthy(text:find("SET_MEM_TABLE: 2 regions with 0 fds", 1, true), text)
    assert.is_truthy(text:find("for queue 7", 1, true), text)
    assert.is_truthy(text:find("payload of 4 bytes, expected 8", 1, true), text)
    -- Still serving: GET_FEATURES gets a reply with VERSION_1 (bit 32) set.
    local bytes = send(hdr(1, 0))
    assert.are.equal(20, #bytes)
    assert.are.equal(5, bytes[5])                -- flags: version 1 | reply
    assert.are.equal(1, bytes[17] & 1)           -- feature bit 32
    -- GET_CONFIG: virtio-net config space with the backend's MAC, link up, MTU.
    bytes = send(hdr(24, 24) .. string.pack("<I4I4I4", 0, 12, 0) .. string.rep("\0", 12))
    assert.are.equal(36, #bytes)
    assert.are.same({2, 0, 0, 0xaa, 0xbb, 0xcc}, {table.unpack(bytes, 25, 30)})
    assert.are.equal(1, bytes[31])               -- status: link up
    assert.are.equal(1400, bytes[35] | bytes[36] << 8)
    -- A config read past the 256-byte space ends the connection, not the device.
    send(hdr(24, 12) .. string.pack("<I4I4I4", 250, 20, 0))
    assert.is_true(ns.alive(pid))
  end)
end)
