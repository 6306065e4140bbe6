-- examples/manager/vmnet, the example shell manager, run by dash in a host
-- namespace H of the test's own that has only a loopback, so the VM's
-- slirp has no route off the machine. Its `netbe apply` makes the VM
-- topology's bridge and tap in H; its `netbe serve` runs the VM's slirp
-- NIC. The guest is a namespace G whose tap a stand-in hypervisor joins
-- to the VM's socket (`netbe wire TAP stream,connect=...`, as QEMU's
-- `-netdev stream` would).
local ns = require("ns")
local json = require("dkjson")

local skip = ns.skip_unless_root("dash", "socat", "ping")

local VMNET = ns.root .. "/examples/manager/vmnet"

-- A VM with a bridged tap (made by apply) and a slirp NIC (run by serve).
local TOPOLOGY = [[
switches = { lan = { type = "bridge" } }
vms = { vm0 = { nics = {
  { switch = "lan", ifname = "vm0tap" },
  { type = "slirp"%s },
} } }
]]

local envs = {}

-- A host namespace and a VMNET_DIR holding VM vm0 with TOPOLOGY, its
-- slirp NIC given EXTRA keys.
local function setup(extra)
  local dir = ns.tmpdir()
  local env = { h = ns.new("mgh"), dir = dir, vms = dir .. "/vms", vmdir = dir .. "/vms/vm0" }
  assert(ns.sh("mkdir -p " .. env.vmdir))
  ns.write(env.vmdir .. "/vm0.lua", TOPOLOGY:format(extra or ""))
  envs[#envs + 1] = env
  return env
end

-- Run `vmnet ARGS` in H -> exit status, stdout, stderr.
local function vmnet(env, args)
  local out, err = env.dir .. "/out", env.dir .. "/err"
  local p = io.popen(string.format("VMNET_DIR=%s NETBE=%s NETBE_STATE_DIR=%s timeout 60 "
                                   .. "ip netns exec %s dash %s %s >%s 2>%s; echo $?",
                                   ns.quote(env.vms), ns.quote(ns.netbe),
                                   ns.quote(env.dir .. "/state"), env.h.name, VMNET, args, out, err))
  local code = tonumber(p:read("a"))
  p:close()
  return code, ns.read(out), ns.read(err)
end

-- The pid of vm0's serve while it runs (not a zombie), else nil.
local function serve_pid(env)
  local pid = tonumber(ns.read(env.vmdir .. "/serve.pid"):match("^%d+"))
  if not pid or not ns.alive(pid) then return nil end
  return ns.read("/proc/" .. pid .. "/cmdline"):find("serve", 1, true) and pid or nil
end

-- Stop what a failed test left running: each serve the manager started.
local function cleanup()
  for _, env in ipairs(envs) do
    local pid = serve_pid(env)
    if pid then ns.kill(pid) end
  end
  envs = {}
  ns.cleanup()
end

local function links(n)
  local _, out = ns.sh("ip -n " .. n.name .. " -o link show")
  local names = {}
  for name in out:gmatch("%d+: ([^:@]+)") do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, " ")
end

-- The guest: namespace G with a tap its hypervisor stand-in joins to
-- vm0's slirp NIC, 10.0.2.15/24 (slirp's first guest address) and a
-- route through slirp's 10.0.2.2, which answers a ping once it is up.
local function boot_guest(env)
  local g, tap = ns.new("mgg"), ns.unique("tap")
  local pid, log = g:spawn("exec " .. ns.netbe .. " wire " .. tap .. " stream,connect=unix:"
                           .. env.vmdir .. "/vm0-nic1.sock --allow-files " .. env.vmdir)
  assert(ns.wait_for(function() return (g:exec("ip link show " .. tap)) end, 10),
         "the guest's tap did not appear: " .. ns.read(log))
  assert(g:exec("ip addr add 10.0.2.15/24 dev " .. tap .. " && ip link set " .. tap
                .. " up && ip route add default via 10.0.2.2"))
  assert(ns.wait_for(function() return (g:exec("ping -c 1 -W 1 10.0.2.2")) end, 10),
         "the guest cannot reach slirp: " .. ns.read(log))
  return { g = g, tap = tap, pid = pid, log = log }
end

-- What a connection to H's 127.0.0.1:PORT gets back.
local function fetch(env, port)
  local _, out = env.h:exec("socat -T 2 - TCP4:127.0.0.1:" .. port .. " </dev/null")
  return out
end

local function started(env)
  local code, out, err = vmnet(env, "start vm0")
  assert.equal(0, code, err)
  return out
end

describe("examples/manager/vmnet", function()
  teardown(cleanup)
  if skip then pending(skip) return end

  it("starts a VM, forwards a host port to the guest and removes it, and stops leaving nothing",
     function()
    local env = setup()
    local out = started(env)
    assert.matches("vm0.nic1: slirp <-> stream,listen=unix:" .. env.vmdir .. "/vm0-nic1.sock\n", out,
                   1, true)
    assert.matches("vm0: started, serve pid %d+", out)
    assert.equal("lan lo vm0tap", links(env.h))
    assert.equal("600", select(2, ns.sh("stat -c %a " .. env.vmdir .. "/ctl.sock")):match("%d+"))
    local pid = assert(serve_pid(env), "no serve runs")

    local guest = boot_guest(env)
    local listener = guest.g:spawn("exec socat TCP4-LISTEN:22,reuseaddr,fork SYSTEM:'echo hello-from-guest'")
    assert(ns.wait_for(function() return (guest.g:exec("ss -ltn | grep -q ':22 '")) end))
    assert.not_matches("hello", fetch(env, 2222))

    local code, text, err = vmnet(env, "fwd vm0 add 2222:22")
    assert.equal(0, code, err)
    assert.equal("vm0: forwarding 127.0.0.1:2222 to guest port 22\n", text)
    assert.matches("hello%-from%-guest", fetch(env, 2222))
    code, text = vmnet(env, "fwd vm0 list")
    assert.equal(0, code)
    assert.equal("1 tcp:127.0.0.1:2222-10.0.2.15:22\n", text)

    code, _, err = vmnet(env, "fwd vm0 rm 2222:23")
    assert.equal(1, code)
    assert.matches("vm0: no forward from 127.0.0.1:2222 to guest port 23", err)
    assert.matches("hello%-from%-guest", fetch(env, 2222))
    code, text, err = vmnet(env, "fwd vm0 rm 2222:22")
    assert.equal(0, code, err)
    assert.equal("vm0: removed forward 127.0.0.1:2222 to guest port 22\n", text)
    assert.not_matches("hello", fetch(env, 2222))
    assert.equal("", select(2, vmnet(env, "fwd vm0 list")))

    code, text = vmnet(env, "stats vm0")
    assert.equal(0, code)
    assert.matches("^nic vm0.nic1: up, link up\n", text)
    local rx = tonumber(text:match("\nslirp +rx_frames=(%d+)"))
    assert.is_true(rx > 0, text)

    code, _, err = vmnet(env, "stop vm0")
    assert.equal(0, code, err)
    assert.is_false(ns.alive(pid))
    assert.is_true(ns.wait_for(function() return not ns.alive(guest.pid) end, 5),
                   "the guest's hypervisor stand-in outlived serve")
    ns.kill(listener)
    assert.equal("lo", links(env.h))
    assert.equal("lo", links(guest.g))
    local _, left = ns.sh("ls " .. env.vmdir)
    assert.equal("serve.log\nvm0.lua\n", left)
    -- destroy forgot the topology (a lock file may stay).
    local _, state = ns.sh("find " .. env.dir .. "/state -mindepth 1 ! -name host.lock")
    assert.equal("", state)
  end)

  it("loads a policy whose drops show in stats, as text and JSON, and keeps it over a restart",
     function()
    local env = setup()
    started(env)
    local guest = boot_guest(env)
    local good = ns.write(env.dir .. "/no-ping.lua", [[
rule { name = "no-ping", dir = "from_guest", proto = "icmp", action = "drop" }
]])
    local code, text, err = vmnet(env, "policy vm0 " .. good)
    assert.equal(0, code, err)
    assert.equal("vm0.nic1: policy " .. env.vmdir .. "/policy.lua, 1 rules\n", text)
    assert.is_false((guest.g:exec("ping -c 3 -i 0.2 -W 1 10.0.2.2")))

    code, text = vmnet(env, "stats vm0")
    assert.equal(0, code)
    assert.matches("policy rule no%-ping +hits=3 bytes=%d+ drops=3", text)
    code, text = vmnet(env, "stats vm0 --json")
    assert.equal(0, code)
    local st = assert(json.decode(text))["return"].nics[1]
    assert.equal("vm0.nic1", st.name)
    assert.equal("no-ping", st.policy.rules[1].name)
    assert.equal(3, st.policy.rules[1].drops)
    assert.equal(3, st.policy.from_guest.drop_frames)

    local bad = ns.write(env.dir .. "/bad.lua", 'rule { name = "x", proto = "tcp", dport = 70000 }\n')
    code, _, err = vmnet(env, "policy vm0 " .. bad)
    assert.equal(1, code)
    assert.matches("policy.lua:1: rule 'x': dport 70000", err, 1, true)
    assert.matches("vm0: '" .. bad .. "' refused, the rules in force stay", err, 1, true)
    assert.equal(ns.read(good), ns.read(env.vmdir .. "/policy.lua"))
    assert.matches("policy rule no%-ping +hits=3", select(2, vmnet(env, "stats vm0")))

    assert.equal(0, (vmnet(env, "stop vm0")))
    started(env)
    assert.matches("policy rule no%-ping +hits=0", select(2, vmnet(env, "stats vm0")))
    assert.equal(0, (vmnet(env, "stop vm0")))
  end)

  it("refuses bad names, unknown VMs, bad forwards and a VM that is not running", function()
    local env = setup()
    local cases = {
      { "", 2, "usage: vmnet start VM" },
      { "start", 2, "usage:" },
      { "reboot vm0", 2, "usage:" },
      { "start ../vms/vm0", 1, "bad VM name '../vms/vm0': expected a lower-case letter, then" },
      { "start vm.0", 1, "bad VM name 'vm.0'" },
      { "start vm-0", 1, "bad VM name 'vm-0'" },
      { "start Vm0", 1, "bad VM name 'Vm0'" },
      { "start 0vm", 1, "bad VM name '0vm'" },
      { "start -vm0", 1, "bad VM name '-vm0'" },
      { "start 'v m'", 1, "bad VM name 'v?m'" },
      { "start " .. string.rep("v", 25), 1, "longer than 24 characters" },
      { "start nosuch", 1, "no VM 'nosuch' (expected its topology at " .. env.vms .. "/nosuch/nosuch.lua)" },
      { "stop vm0", 1, "vm0 is not running" },
      { "stats vm0", 1, "vm0 is not running" },
      { "stats vm0 --xml", 2, "usage:" },
      { "fwd vm0 add 2222:22", 1, "vm0 is not running" },
      { "fwd vm0 list", 1, "vm0 is not running" },
      { "fwd vm0 move 2222:22", 2, "usage:" },
      { "policy vm0 " .. env.dir .. "/none.lua", 1, "is not a readable file" },
      { "policy vm0 " .. env.dir, 1, "is not a readable file" },
    }
    for _, bad in ipairs({ "2222", "0:22", "2222:0", "70000:22", "022:22", ":22", "22:",
                           "22:x", "2222:22:1", "99999999999999999999:1" }) do
      cases[#cases + 1] = { "fwd vm0 add " .. bad, 1, "bad forward '" .. bad
                            .. "': expected HOSTPORT:GUESTPORT, ports 1 to 65535" }
    end
    for _, c in ipairs(cases) do
      local code, out, err = vmnet(env, c[1])
      assert.equal(c[2], code, c[1] .. ": " .. err)
      assert.equal("", out, c[1])
      assert.matches(c[3], err, 1, true)
    end
    assert.is_false(ns.sh("test -e " .. env.vms .. "/nosuch"))

    started(env)
    local code, _, err = vmnet(env, "start vm0")
    assert.equal(1, code)
    assert.matches("vm0 is running already %(serve pid %d+%)", err)
    code, _, err = vmnet(env, "fwd vm0 add 2222:22")
    assert.equal(0, code, err)
    code, _, err = vmnet(env, "fwd vm0 add 2222:23")
    assert.equal(1, code)
    assert.matches("already forwarded", err)
    assert.equal(0, (vmnet(env, "stop vm0")))
  end)

  it("lets one of two starts at the same moment run; a live lock holder keeps the VM busy, a dead one's lock is taken over",
     function()
    local env = setup()
    local cmd = string.format("VMNET_DIR=%s NETBE=%s NETBE_STATE_DIR=%s timeout 60 ip netns exec %s dash %s start vm0",
                              ns.quote(env.vms), ns.quote(ns.netbe), ns.quote(env.dir .. "/state"),
                              env.h.name, VMNET)
    local ok, out = ns.sh(string.format("(%s >%s/a 2>&1; echo $? >%s/a.rc) & (%s >%s/b 2>&1; echo $? >%s/b.rc) & wait",
                                        cmd, env.dir, env.dir, cmd, env.dir, env.dir))
    assert(ok, out)
    local rcs = { tonumber(ns.read(env.dir .. "/a.rc")), tonumber(ns.read(env.dir .. "/b.rc")) }
    table.sort(rcs)
    local both = ns.read(env.dir .. "/a") .. ns.read(env.dir .. "/b")
    assert.same({ 0, 1 }, rcs, both)
    assert.is_truthy(both:find("vm0 is busy: vmnet pid %d+ is changing it") or
                     both:find("vm0 is running already"), both)
    assert.equal(1, select(2, both:gsub("vm0: started", "")), both)
    assert(serve_pid(env), "no serve runs")
    assert.equal("lan lo vm0tap", links(env.h), "the refused start undid the other's apply")
    assert.is_false(ns.sh("test -e " .. env.vmdir .. "/lock"), "the lock outlived the commands")

    local holder = env.h:spawn("exec sleep 30")
    assert(ns.sh("mkdir " .. env.vmdir .. "/lock && echo " .. holder .. " >" .. env.vmdir .. "/lock/pid"))
    local code, _, err = vmnet(env, "stop vm0")
    assert.equal(1, code)
    assert.matches("vm0 is busy: vmnet pid " .. holder .. " is changing it", err, 1, true)
    assert(serve_pid(env), "a refused stop stopped the VM")
    ns.kill(holder)
    assert(ns.wait_for(function() return not ns.alive(holder) end))
    code, _, err = vmnet(env, "stop vm0")
    assert.equal(0, code, err)
    assert.is_nil(serve_pid(env))
    assert.is_false(ns.sh("test -e " .. env.vmdir .. "/lock"))
  end)

  it("undoes a start whose NIC fails or whose serve cannot start", function()
    local env = setup(', hostfwd = { "tcp:127.0.0.1:2300-:22" }')
    env.h:spawn("exec socat TCP4-LISTEN:2300,bind=127.0.0.1,reuseaddr,fork SYSTEM:true")
    assert(ns.wait_for(function() return (env.h:exec("ss -ltn | grep -q ':2300 '")) end))
    local code, _, err = vmnet(env, "start vm0")
    assert.equal(1, code)
    assert.matches("start vm0: nic vm0.nic1: down", err, 1, true)
    assert.matches("2300", err)
    assert.is_nil(serve_pid(env))
    assert.equal("lo", links(env.h))
    assert.is_false(ns.sh("test -e " .. env.vmdir .. "/serve.pid -o -e " .. env.vmdir .. "/ctl.sock"))

    env = setup()
    ns.write(env.vmdir .. "/ctl.sock", "not a socket\n")
    code, _, err = vmnet(env, "start vm0")
    assert.equal(1, code)
    assert.matches("start vm0: serve did not come up: .*exists and is a regular file", err)
    assert.is_nil(serve_pid(env))
    assert.equal("lo", links(env.h))
  end)
end)
