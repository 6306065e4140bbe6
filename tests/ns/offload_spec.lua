-- offload_spec.lua: software offloads against the kernel's own frames.
-- A TCP sender in a namespace routes through a tap with TSO on, so the
-- kernel hands netbe real 64 KiB TSO frames. Each one is segmented by
-- netbe and, for comparison, by the kernel itself (the frame goes into a
-- bridge whose other port is a tap without offloads, so the kernel's GSO
-- cuts it). The segments must match byte for byte, and netbe's segments
-- are what the receiver gets: its kernel checks every checksum and the
-- data must arrive intact. The same for USO (UDP_SEGMENT) frames. Then
-- `netbe wire` moves a multi-MB stream with offloads on, tap<->tap and
-- through a stream socket (segmented by netbe).
local ns = require("ns")
local netbe = require("netbe")
local tcpxfer = require("tcpxfer")

local skip = ns.skip_unless_root("python3", "ip", "ss")
local ZERO12 = string.rep("\0", 12)
local GUEST = netbe.F_GUEST_CSUM | netbe.F_GUEST_TSO4 | netbe.F_GUEST_TSO6
local HOST = netbe.F_CSUM | netbe.F_HOST_TSO4 | netbe.F_HOST_TSO6
local USO = netbe.F_GUEST_USO4 | netbe.F_GUEST_USO6 | netbe.F_HOST_USO

-- A tap opened here, moved into namespace N (if any), up, with addresses.
local function tap(n, features, addrs)
  local name = ns.unique("tap")
  ns.own_link(name)
  local be = netbe.open({ backend = name, type = "tap" })
  assert(be:set_cap(features, 12))
  if n then
    assert(ns.sh("ip link set " .. name .. " netns " .. n.name))
    assert(n:exec("ip link set " .. name .. " up"))
    for _, a in ipairs(addrs or {}) do
      local ok, out = n:exec("ip addr add " .. a .. " dev " .. name ..
                             (a:find(":") and " nodad" or ""))
      assert(ok, out)
    end
  end
  return be, name
end

local read_file = ns.read

-- Start a transfer from S to R; returns a function that says whether both
-- ends are done, and one that asserts the sender printed its "LEN SHA"
-- line and the receiver the same (two missing lines are equal).
local function start_transfer(S, R, addr, port, bytes)
  local done, result = tcpxfer.start(S, R, addr, port, bytes)
  local function intact()
    local sent, got = result()
    assert.is_truthy(sent, "sender printed no result")
    assert.equal(sent, got)
  end
  return done, intact
end

local function first_difference(a, b)
  for i = 1, math.max(#a, #b) do
    if a:byte(i) ~= b:byte(i) then return i end
  end
end

describe("software segmentation against the kernel", function()
  teardown(ns.cleanup)

  -- S --t1--> [this test] --t4--> R, with t2 -> bridge -> t3 in K beside it.
  -- EXTRA: more features for t1 and t2 (USO).
  local function setup(extra)
    extra = extra or 0
    local S, R, K = ns.new("snd"), ns.new("rcv"), ns.new("seg")
    assert(K:exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"))
    local st = { gso = 0, csum = 0, compared = 0, mismatches = {}, types = {} }
    st.t1, st.n1 = tap(S, GUEST | HOST | extra, { "10.77.0.1/24", "fd77::1/64" })
    st.t4 = tap(R, HOST, { "10.77.0.2/24", "fd77::2/64" })
    local n2, n3
    st.t2, n2 = tap(K, HOST | (extra & netbe.F_HOST_USO))
    st.t3, n3 = tap(K, 0)
    assert(K:exec("ip link add br0 type bridge && ip link set br0 up && ip link set " .. n2 ..
                  " master br0 && ip link set " .. n3 .. " master br0"))
    -- The host sent router solicitations and such while the taps were
    -- still its own: they wait in the queues. Drop them.
    netbe.step(0.2)
    for _, be in ipairs({ st.t1, st.t2, st.t3, st.t4 }) do
      while be:recv() do end
    end
    return S, R, st
  end

  -- The kernel's segments of FRAME: through the bridge to the plain tap.
  local function kernel_segments(st, frame, want)
    assert(st.t2:send(frame))
    local got = {}
    for _ = 1, 500 do
      local k = st.t3:recv()
      if k then
        -- Only what the bridge forwarded; br0's own IGMP reports go too.
        if k:sub(13, 24) == frame:sub(13, 24) then got[#got + 1] = k:sub(13) end
      else
        if #got >= want then break end
        netbe.step(0.002)
      end
    end
    return got
  end

  local function handle(st, f)
    local flags, gso = f:byte(1), f:byte(2)
    if gso ~= 0 then
      st.gso = st.gso + 1
      st.types[gso] = (st.types[gso] or 0) + 1
      local ours = assert(netbe.offload(f, 12))
      local kern = kernel_segments(st, f, #ours)
      if #kern ~= #ours then
        st.mismatches[#st.mismatches + 1] = string.format(
          "GSO frame %d: netbe made %d segments, the kernel %d", st.gso, #ours, #kern)
      end
      for i = 1, math.min(#kern, #ours) do
        st.compared = st.compared + 1
        if kern[i] ~= ours[i] and #st.mismatches < 5 then
          st.mismatches[#st.mismatches + 1] = string.format(
            "GSO frame %d segment %d: first difference at byte %d (len %d vs %d)",
            st.gso, i, first_difference(kern[i], ours[i]), #ours[i], #kern[i])
        end
      end
      for _, seg in ipairs(ours) do st.t4:send(ZERO12 .. seg) end
    elseif flags & 1 ~= 0 then
      st.csum = st.csum + 1
      local ours = assert(netbe.offload(f, 12))
      st.t4:send(ZERO12 .. ours[1])
    else
      st.t4:send(f)
    end
  end

  local function pump(st)
    local moved = false
    for _ = 1, 32 do
      local f = st.t1:recv()
      if not f then break end
      handle(st, f)
      moved = true
    end
    for _ = 1, 32 do
      local f = st.t4:recv()
      if not f then break end
      st.t1:send(f)
      moved = true
    end
    return moved
  end

  local function run(st, done, seconds)
    local idle, deadline = 0, os.time() + seconds
    while os.time() < deadline do
      if pump(st) then idle = 0 else
        idle = idle + 1
        if idle % 50 == 0 and done() then return true end
        netbe.step(0.001)
      end
    end
    return false
  end

  for _, case in ipairs({ { "IPv4", "10.77.0.2", "TSO4" }, { "IPv6", "fd77::2", "TSO6" } }) do
    it("cuts real " .. case[3] .. " frames as the kernel does, and the receiver takes them", function()
      if skip then return pending(skip) end
      local S, R, st = setup()
      local done, intact = start_transfer(S, R, case[2], 5001, 3 * 1024 * 1024)
      assert.is_true(run(st, done, 90), "transfer did not finish")
      intact()
      assert.is_true(st.gso >= 5, "only " .. st.gso .. " TSO frames from the kernel")
      assert.is_true(st.compared > 5 * 10, "compared " .. st.compared .. " segments")
      assert.same({}, st.mismatches)
      assert.equal(0, st.t1:stats().rx_bad_hdr)
    end)
  end

  it("cuts real USO frames (UDP_SEGMENT) as the kernel does", function()
    if skip then return pending(skip) end
    local probe = netbe.open({ backend = ns.unique("tap"), type = "tap" })
    local caps = probe:get_cap()
    probe:close()
    if caps & USO ~= USO then return pending("this kernel's tun has no USO") end
    local S, R, st = setup(USO)
    local pid = S:spawn("python3 -c " .. ns.quote([[
import socket, time
for fam, addr in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd77::2")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(17, 103, 1200)  # SOL_UDP, UDP_SEGMENT
    for i in range(10):
        s.sendto(bytes((i * 7 + j) & 255 for j in range(9000 + i * 333)), (addr, 9))
        time.sleep(0.05)
]]))
    run(st, function() return not ns.alive(pid) end, 20)
    assert.is_true((st.types[5] or 0) >= 10, "only " .. tostring(st.types[5]) .. " USO frames")
    assert.is_true(st.compared >= 10 * 8, "compared " .. st.compared .. " segments")
    assert.same({}, st.mismatches)
  end)

  -- Crafted frames the kernel's TCP does not send: CWR, FIN and PSH on a
  -- TSO frame; UFO (the kernel fragments it, but never makes one now).
  it("cuts crafted ECN TSO and UFO frames as the kernel does", function()
    if skip then return pending(skip) end
    local _, _, st = setup()
    local function fold(t)
      while t > 0xffff do t = (t & 0xffff) + (t >> 16) end
      return t
    end
    local function sum(b)
      local t = 0
      if #b % 2 == 1 then b = b .. "\0" end
      for i = 1, #b, 2 do t = t + (b:byte(i) << 8 | b:byte(i + 1)) end
      return fold(t)
    end
    local eth = "\2\0\0\0\0\2\2\0\0\0\0\1\8\0"
    local addrs = "\10\77\0\1\10\77\0\2"
    local function ipv4(proto, len, id)
      local h = string.pack(">BBI2I2I2BBI2", 0x45, 0, len, id, 0x4000, 64, proto, 0) .. addrs
      return h:sub(1, 10) .. string.pack(">I2", 0xffff - sum(h)) .. h:sub(13)
    end
    local data = {}
    for i = 1, 7000 do data[i] = string.char((i * 13) & 255) end
    data = table.concat(data)
    -- TCP: CWR|ECE|PSH|ACK|FIN, 32-byte header with options.
    local tcplen = 32 + #data
    local partial = sum(addrs .. string.pack(">BBI2", 0, 6, tcplen))
    local tcp = string.pack(">I2I2I4I4BBI2I2I2", 40000, 5001, 0xfffffff0, 77, 0x80, 0xc9, 500,
                            partial, 0) .. "\1\1\8\10\0\0\0\1\0\0\0\2"
    local tso = string.pack("<BBI2I2I2I2I2", 1, 0x81, 14 + 20 + 32, 1400, 34, 16, 0)
                .. eth .. ipv4(6, 20 + tcplen, 0xfffe) .. tcp .. data
    -- UDP, fragmented by UFO with 1480-byte pieces.
    local udplen = 8 + #data
    local udp = string.pack(">I2I2I2I2", 40000, 9, udplen,
                            sum(addrs .. string.pack(">BBI2", 0, 17, udplen)))
    local ufo = string.pack("<BBI2I2I2I2I2", 1, 3, 14 + 20 + 8, 1480, 34, 6, 0)
                .. eth .. ipv4(17, 20 + udplen, 4242) .. udp .. data
    -- A UFO frame that fits in one piece is sent whole (DF kept).
    local small = data:sub(1, 1000)
    local sudp = string.pack(">I2I2I2I2", 40000, 9, 8 + #small,
                             sum(addrs .. string.pack(">BBI2", 0, 17, 8 + #small)))
    local ufo1 = string.pack("<BBI2I2I2I2I2", 1, 3, 14 + 20 + 8, 1480, 34, 6, 0)
                 .. eth .. ipv4(17, 28 + #small, 4243) .. sudp .. small
    for _, f in ipairs({ tso, ufo, ufo1 }) do
      assert.is_true(netbe.frame_check(f, 12))
      handle(st, f)
    end
    assert.equal(3, st.gso)
    assert.equal(5 + 5 + 1, st.compared)
    assert.same({}, st.mismatches)
  end)

  it("segments on receive the TSO frames a frontend stopped accepting", function()
    if skip then return pending(skip) end
    local S, R, st = setup()
    -- A large initial window: the sender queues several TSO frames at once.
    assert(S:exec("ip route replace 10.77.0.0/24 dev " .. st.n1 .. " initcwnd 100"))
    local done, intact = start_transfer(S, R, "10.77.0.2", 5002, 2 * 1024 * 1024)
    -- Pump until the first TSO frame, keep it, turn TSO off, then go on.
    local first
    for _ = 1, 5000 do
      local f = st.t1:recv()
      if f and f:byte(2) ~= 0 then first = f; break end
      if f then handle(st, f) end
      local r = st.t4:recv()
      if r then st.t1:send(r) end
      if not f and not r then netbe.step(0.001) end
    end
    assert.is_truthy(first, "no TSO frame came")
    netbe.step(0.2)
    assert(st.t1:set_cap(netbe.F_GUEST_CSUM | HOST, 12))
    handle(st, first)
    assert.is_true(run(st, done, 60), "transfer did not finish")
    intact()
    assert.is_true(st.t1:stats().rx_sw_frames > 0, "no frame was segmented on receive")
    assert.same({}, st.mismatches)
  end)
end)

describe("netbe wire with offloads", function()
  teardown(ns.cleanup)

  -- Taps named here, made by `netbe wire`, moved into namespaces A and B.
  local function wire_taps(wires)
    local A, B = ns.new("wa"), ns.new("wb")
    local ta, tb = ns.unique("tap"), ns.unique("tap")
    ns.own_link(ta); ns.own_link(tb)
    local pids, logs = {}, {}
    for i, w in ipairs(wires(ta, tb)) do
      pids[i], logs[i] = ns.spawn(ns.netbe .. " wire " .. w)
    end
    assert(ns.wait_for("ip link show " .. ta .. " && ip link show " .. tb, 5), "taps did not appear")
    for _, x in ipairs({ { A, ta, "10.78.0.1/24" }, { B, tb, "10.78.0.2/24" } }) do
      assert(ns.sh("ip link set " .. x[2] .. " netns " .. x[1].name))
      assert(x[1]:exec("ip addr add " .. x[3] .. " dev " .. x[2] .. " && ip link set " .. x[2] .. " up"))
    end
    return A, B, ta, tb, pids, logs
  end

  local function stats_of(log, name)
    local line = log:match("\n" .. name .. "%s+([^\n]*)")
    local s = {}
    for k, v in (line or ""):gmatch("(%w[%w_]*)=(%d+)") do s[k] = tonumber(v) end
    return s
  end

  it("tap<->tap moves a 32 MB TCP stream intact in TSO frames", function()
    if skip then return pending(skip) end
    local A, B, ta, tb, pids, logs = wire_taps(function(ta, tb) return { ta .. " " .. tb } end)
    local done, intact = start_transfer(A, B, "10.78.0.2", 5003, 32 * 1024 * 1024)
    assert.is_true(ns.wait_for(done, 60), "transfer did not finish")
    intact()
    ns.kill(pids[1], "INT")
    local log = read_file(logs[1])
    assert.matches("offloads " .. ta .. ": csum guest_csum host_tso4", log, 1, true)
    local s = stats_of(log, ta)
    assert.is_true(s.rx_frames and s.rx_frames > 0, "no counters in: " .. log)
    -- 32 MB in 1500-byte frames would be over 22000 frames.
    assert.is_true(s.rx_bytes / s.rx_frames > 8000,
                   string.format("average frame %d bytes: no TSO", s.rx_bytes // s.rx_frames))
    assert.equal(0, s.rx_bad_hdr)
  end)

  it("tap<->stream segments TSO frames in software and the data arrives intact", function()
    if skip then return pending(skip) end
    local dir = ns.tmpdir()
    local sock = "unix:" .. dir .. "/s.sock"
    local A, B, ta, tb, pids, logs = wire_taps(function(ta, tb)
      return { ta .. " stream,listen=" .. sock .. " --stats 1 --allow-files " .. dir,
               "stream,connect=" .. sock .. ",reconnect=1 " .. tb .. " --allow-files " .. dir }
    end)
    local done, intact = start_transfer(A, B, "10.78.0.2", 5004, 8 * 1024 * 1024)
    assert.is_true(ns.wait_for(done, 60), "transfer did not finish")
    intact()
    ns.kill(pids[1], "INT")
    ns.kill(pids[2], "INT")
    local s = stats_of(read_file(logs[1]):match(".*(wire: stopped.*)$") or "", "stream")
    assert.is_true((s.tx_sw_frames or 0) > 50, "stream side segmented " ..
                   tostring(s.tx_sw_frames) .. " frames in software")
    assert.equal(0, s.tx_bad_hdr)
    -- The other wire's stream joins the segments again for its tap, which
    -- sends TSO frames itself.
    local r = stats_of(read_file(logs[2]):match(".*(wire: stopped.*)$") or "", "stream")
    assert.is_true(r.rx_frames and r.rx_frames > 0 and r.rx_bytes / r.rx_frames > 8000,
                   string.format("stream receive: average frame %s bytes: not joined",
                                 r.rx_frames and r.rx_bytes // r.rx_frames))
  end)
end)
