-- vhost_dpdk_spec.lua: examples/vhost-user-net (its ASan build) driven by
-- DPDK's virtio-user, testpmd playing the guest without a VM. Frames with
-- known contents go into the device's backend, testpmd forwards what it
-- receives back out (io mode), and every frame must come back byte for
-- byte (tests/helpers/vuframes.py): with mergeable rx buffers on and off,
-- indirect descriptors on and off, two queue pairs over a multiqueue tap
-- (and one of them left unused), and a driver killed and started again
-- while the device keeps serving; with VIRTIO_F_IN_ORDER on and off, where
-- a device that handed chains back out of order would have the driver free
-- the wrong buffers. Split rings only: packed rings stay off.
local ns = require("ns")

local skip = ns.skip_unless_root("dpdk-testpmd", "python3")
local DEV = ns.root .. "/build/vhost-user-net"
local FRAMES = "python3 " .. ns.quote(ns.root .. "/tests/helpers/vuframes.py")

local F_MRG_RXBUF, F_MQ, F_INDIRECT, F_IN_ORDER = 15, 22, 28, 35

-- The EAL file prefixes of the testpmds started here: DPDK keeps a
-- directory under /var/run/dpdk for each, removed after each test.
local prefixes = {}

local function cleanup()
  ns.cleanup()
  for _, p in ipairs(prefixes) do ns.sh("rm -rf /var/run/dpdk/" .. p) end
  prefixes = {}
end

-- Whether feature bit B is set in F.
local function has(f, b) return (f >> b) & 1 == 1 end

-- Start the device on DIR/dev.sock with BACKEND, in namespace N (or on the
-- host), with FLAGS; returns pid, log once it listens.
local function device(dir, backend, n, flags)
  local cmd = "exec " .. ns.quote(DEV) .. " --socket " .. ns.quote(dir .. "/dev.sock") .. " " ..
    (flags or "") .. " " .. ns.quote(backend)
  local pid, log
  if n then pid, log = n:spawn(cmd) else pid, log = ns.spawn(cmd) end
  assert(ns.wait_for(function() return ns.read(log):find("listening on", 1, true) end, 20),
    "the device did not start: " .. ns.read(log))
  return pid, log
end

local function count(text, pattern)
  local k = 0
  for _ in text:gmatch(pattern) do k = k + 1 end
  return k
end

-- The negotiated features of the device's CONNECTION-th connection.
local function features(log, connection)
  local k = 0
  for f in ns.read(log):gmatch("features 0x(%x+)") do
    k = k + 1
    if k == connection then return tonumber(f, 16) end
  end
  return nil
end

-- testpmd on the device's socket in io mode, forwarding from the start.
-- OPTS: mrg (0 or 1), in_order (0, the default, or 1), queues
-- (virtio-user's pairs), rxq (pairs testpmd uses), mode (testpmd's
-- forwarding mode, default io). Returns pid, log once the device saw
-- features for its CONNECTION.
local function testpmd(dir, dev_log, connection, opts)
  local queues = opts.queues or 1
  prefixes[#prefixes + 1] = ns.unique("vupmd")
  local cmd = "exec dpdk-testpmd -l 0,1 --no-huge -m 1024 --no-pci --iova-mode=va --no-shconf " ..
    "--no-telemetry --file-prefix=" .. prefixes[#prefixes] ..
    " --vdev net_virtio_user0,path=" .. dir .. "/dev.sock,queues=" .. queues ..
    ",mrg_rxbuf=" .. opts.mrg .. ",in_order=" .. (opts.in_order or 0) ..
    ",packed_vq=0 -- --total-num-mbufs=8192" ..
    " --forward-mode=" .. (opts.mode or "io") .. " --auto-start --stats-period 600" ..
    " --rxq=" .. (opts.rxq or queues) .. " --txq=" .. (opts.rxq or queues)
  local pid, log = ns.spawn(cmd)
  assert(ns.wait_for(function()
    return features(dev_log, connection) and ns.read(log):find("forwarding packets", 1, true)
  end, 30), "testpmd did not start forwarding: " .. ns.read(log) .. "\ndevice: " .. ns.read(dev_log))
  return pid, log
end

-- Send COUNT frames of SIZES into the device's stream backend at DIR/be.sock
-- (or, with N and TAP, FLOWS flows out of TAP in N) and check what comes
-- back. EXPECT_MAX: longer frames are not expected back. Returns ok, output.
local function loop(dir, count_, sizes, opts)
  opts = opts or {}
  local env = opts.expect_max and ("VUFRAMES_EXPECT_MAX=" .. opts.expect_max .. " ") or ""
  if opts.tap then
    return opts.n:exec(env .. "timeout 120 " .. FRAMES .. " packet " .. opts.tap .. " " .. count_ ..
      " " .. sizes .. " " .. opts.flows)
  end
  return ns.sh(env .. "timeout 120 " .. FRAMES .. " stream " .. ns.quote(dir .. "/be.sock") .. " " ..
    count_ .. " " .. sizes)
end

-- The CPU time process PID has used, user and system, in microseconds.
local TICK_US = 1000000 // tonumber(select(2, ns.sh("getconf CLK_TCK")):match("%d+"))
local function cpu_us(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local fields = {}
  for w in f:read("a"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  f:close()
  return (tonumber(fields[12]) + tonumber(fields[13])) * TICK_US
end

-- The device's counters (SIGUSR1): ring -> {frames, dropped, oversize,
-- watched (microseconds watched dry under --poll)}.
local function report(pid, log)
  local before = count(ns.read(log), "queue 0 %(rx%)")
  ns.sh("kill -USR1 " .. pid)
  assert(ns.wait_for(function() return count(ns.read(log), "queue 0 %(rx%)") > before end, 10))
  ns.sh("sleep 0.2")
  local rings, text = {}, ns.read(log)
  for q, f, d, o, w in text:gmatch("queue (%d+) %(%a+%): (%d+) frames, (%d+) dropped, " ..
                                   "of them (%d+) oversize; watched dry (%d+) us") do
    rings[tonumber(q)] = {frames = tonumber(f), dropped = tonumber(d), oversize = tonumber(o),
                          watched = tonumber(w)}
  end
  return rings
end

-- A namespace whose interfaces have no IPv6, so that the kernel sends
-- nothing of its own through the tap the device makes there.
local function quiet_ns()
  local n = ns.new("vq")
  assert(n:exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"))
  return n
end

-- The device on a tap TAP_OPTS (",queues=2") in a quiet namespace, and
-- testpmd with PMD_OPTS on it. Returns n, tap, dir, pid and log.
local function tap_setup(tap_opts, pmd_opts)
  local t = {n = quiet_ns(), tap = ns.unique("tap"), dir = ns.tmpdir()}
  t.pid, t.log = device(t.dir, t.tap .. tap_opts, t.n)
  testpmd(t.dir, t.log, 1, pmd_opts)
  return t
end

-- The device's log has no sanitizer report.
local function clean(log)
  local text = ns.read(log)
  assert.is_falsy(text:find("AddressSanitizer", 1, true) or text:find("runtime error", 1, true), text)
end

describe("vhost-user-net driven by DPDK's virtio-user #ns", function()
  after_each(cleanup)
  teardown(cleanup)
  if skip then pending(skip) return end
  if not ns.sh("test -x " .. ns.quote(DEV)) then pending("build build/vhost-user-net first (make)") return end

  -- Frames of up to 9000 bytes pass only in mergeable buffers: DPDK posts
  -- 2 KiB ones, and forwards such a frame as a chain of mbufs, which it
  -- sends with an indirect table when it may.
  for _, case in ipairs({{mrg = 1, indirect = true}, {mrg = 1, indirect = false},
                         {mrg = 0, indirect = true}, {mrg = 0, indirect = false},
                         {mrg = 1, indirect = true, poll = true},
                         {mrg = 1, indirect = true, in_order = 1},
                         {mrg = 0, indirect = false, in_order = 1, poll = true}}) do
    local what = "mergeable buffers " .. (case.mrg == 1 and "on" or "off") ..
      ", indirect descriptors " .. (case.indirect and "on" or "off") ..
      (case.in_order and ", in order" or "") ..
      (case.poll and ", dry rings watched (--poll)" or "")
    it(what .. ": frames loop through the device intact", function()
      local dir = ns.tmpdir()
      local pid, log = device(dir, "stream,listen=unix:" .. dir .. "/be.sock", nil,
        "--allow-files " .. dir .. (case.indirect and "" or " --disable indirect_desc") ..
        (case.poll and " --poll 200" or ""))
      testpmd(dir, log, 1, {mrg = case.mrg, in_order = case.in_order})
      local f = features(log, 1)
      assert.are.equal(case.mrg == 1, has(f, F_MRG_RXBUF), string.format("features 0x%x", f))
      assert.are.equal(case.indirect, has(f, F_INDIRECT), string.format("features 0x%x", f))
      assert.are.equal(case.in_order == 1, has(f, F_IN_ORDER), string.format("features 0x%x", f))
      local sizes = case.mrg == 1 and "60,1514,2000,4000,9000,1000" or "60,1514,1000,4000"
      local ok, out = loop(dir, 1500, sizes, {expect_max = case.mrg == 0 and 2000 or nil})
      assert.is_true(ok, out .. "\ndevice: " .. ns.read(log))
      local rings = report(pid, log)
      if case.mrg == 1 then
        assert.are.equal(1500, rings[0].frames)
        assert.are.equal(0, rings[0].dropped)
      else
        -- Every fourth frame is 4000 bytes: too big for one buffer, dropped.
        assert.are.equal(1125, rings[0].frames)
        assert.are.equal(375, rings[0].oversize)
      end
      assert.are.equal(rings[0].frames, rings[1].frames)
      clean(log)
    end)
  end

  it("mergeable buffers off: a tap's frame too long for the driver's buffers is dropped, never cut",
     function()
    local t = tap_setup(",mtu=9000", {mrg = 0})
    local ok, out = loop(t.dir, 600, "60,1514,4000", {n = t.n, tap = t.tap, flows = 4, expect_max = 2000})
    assert.is_true(ok, out .. "\ndevice: " .. ns.read(t.log))
    local rings = report(t.pid, t.log)
    assert.are.equal(400, rings[0].frames)
    assert.are.equal(200, rings[0].oversize)
    clean(t.log)
  end)

  it("two queue pairs over a tap with queues=2: flows go over both, intact", function()
    local t = tap_setup(",queues=2,mtu=9000", {mrg = 1, queues = 2})
    assert.is_true(has(features(t.log, 1), F_MQ))
    local ok, out = loop(t.dir, 2000, "60,1514,4000,9000", {n = t.n, tap = t.tap, flows = 16})
    assert.is_true(ok, out .. "\ndevice: " .. ns.read(t.log))
    local rings = report(t.pid, t.log)
    assert.is_true(rings[0].frames > 0 and rings[2].frames > 0,
      "flows on one pair only: " .. ns.read(t.log))
    assert.is_true(rings[1].frames + rings[3].frames >= 2000)
    clean(t.log)
  end)

  it("a driver that uses one pair of two: the other queue is detached, no flow is lost", function()
    local t = tap_setup(",queues=2", {mrg = 1, queues = 2, rxq = 1})
    local _, link = t.n:exec("ip -d link show " .. t.tap)
    assert.is_truthy(link:find("numqueues 1 ", 1, true), link)
    local ok, out = loop(t.dir, 1000, "60,1514", {n = t.n, tap = t.tap, flows = 16})
    assert.is_true(ok, out .. "\ndevice: " .. ns.read(t.log))
    local rings = report(t.pid, t.log)
    assert.is_true(rings[0].frames >= 1000)
    assert.are.equal(0, rings[2].frames)
    clean(t.log)
  end)

  it("refuses a --poll or --coalesce it cannot take, naming the option and the range", function()
    for _, bad in ipairs({"--poll x", "--poll -1", "--poll 100001", "--poll 99999999999999999999",
                          "--coalesce 1.5", "--poll ''"}) do
      local ok, out = ns.sh(DEV .. " --socket /nonexistent/s " .. bad .. " null 2>&1")
      local option = bad:match("^(%S+)")
      assert.is_false(ok, bad)
      assert.is_truthy(out:find(option .. " '.*': expected microseconds from 0 to 100000"), bad .. ": " .. out)
    end
  end)

  -- --poll watches a dry ring at most 1 ms here: a spin that outlived
  -- the traffic would show as CPU time.
  it("a device whose traffic stopped sleeps: no polling, no timer left running", function()
    local dir = ns.tmpdir()
    local pid, log = device(dir, "stream,listen=unix:" .. dir .. "/be.sock", nil,
      "--allow-files " .. dir .. " --coalesce 100 --poll 1000")
    testpmd(dir, log, 1, {mrg = 1})
    local ok, out = loop(dir, 5000, "60,1514")
    assert.is_true(ok, out)
    ns.sh("sleep 0.5")
    local t0 = cpu_us(pid)
    ns.sh("sleep 2")
    local used = (cpu_us(pid) - t0) // TICK_US
    assert.is_true(used <= 2, "the idle device used " .. used .. " ticks of CPU in 2 s")
    clean(log)
  end)

  -- A driver that sends as fast as it can into null: the device, faster,
  -- finds its tx ring dry between bursts and, with --poll, watches it;
  -- the report says for how long, within the device's CPU time.
  it("the time a dry ring is watched is counted, only with --poll", function()
    for _, poll in ipairs({true, false}) do
      local dir = ns.tmpdir()
      local pid, log = device(dir, "null", nil, poll and "--poll 1000" or "")
      local pmd = testpmd(dir, log, 1, {mrg = 1, mode = "txonly"})
      ns.sh("sleep 1")
      local rings = report(pid, log)
      local used = cpu_us(pid)
      assert.is_true(rings[1].frames > 10000, "frames sent: " .. rings[1].frames)
      if poll then
        assert.is_true(rings[1].watched > 0, ns.read(log))
        assert.is_true(rings[1].watched <= used + 20000,
          rings[1].watched .. " us watched in " .. used .. " us of CPU")
      else
        assert.are.equal(0, rings[1].watched)
      end
      ns.kill(pmd, "KILL")
      ns.kill(pid, "TERM")
      clean(log)
    end
  end)

  it("a driver killed and started again: the device keeps serving", function()
    local dir = ns.tmpdir()
    local pid, log = device(dir, "stream,listen=unix:" .. dir .. "/be.sock", nil, "--allow-files " .. dir)
    local pmd = testpmd(dir, log, 1, {mrg = 1})
    local ok, out = loop(dir, 500, "60,1514,4000")
    assert.is_true(ok, out)
    ns.kill(pmd, "KILL")
    assert(ns.wait_for(function() return ns.read(log):find("disconnected", 1, true) end, 10), ns.read(log))
    testpmd(dir, log, 2, {mrg = 0})
    ok, out = loop(dir, 500, "60,1514")
    assert.is_true(ok, out .. "\ndevice: " .. ns.read(log))
    assert.is_true(ns.alive(pid))
    assert.are.equal(2, count(ns.read(log), "vhost%-user%-net: connected"))
    assert.is_false(has(features(log, 2), F_MRG_RXBUF))
    clean(log)
  end)
end)
