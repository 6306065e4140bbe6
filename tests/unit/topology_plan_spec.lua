-- The plan engine (apply, rollback, destroy, status) on real commands that
-- only touch files in a temporary directory, and the Linux renderer's
-- steps: order, probes, inverses.
local plan = require("netbe.plan")
local topology = require("netbe.topology")
local render_linux = require("netbe.render_linux")
local ns = require("ns")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  return p:close() == true, out
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A step that makes file NAME in DIR; its inverse removes it and notes
-- the undo in DIR/undo.log.
local function file_step(dir, name)
  local path = dir .. "/" .. name
  return { id = "file:" .. name, what = "make " .. name,
           run = { { "touch", path } },
           probe = { { argv = { "test", "-e", path } } },
           inverse = { { "rm", path }, { "sh", "-c", "echo " .. name .. " >> " .. dir .. "/undo.log" } } }
end

local function new_ctx(dry)
  local lines, saves = {}, 0
  local ctx = { run = plan.runner(), dry = dry, made = {},
                log = function(l) lines[#lines + 1] = l end }
  ctx.save = function() saves = saves + 1 end
  ctx.lines = lines
  ctx.saves = function() return saves end
  return ctx
end

describe("plan engine", function()
  local dir
  before_each(function()
    local _, out = sh("mktemp -d /tmp/netbe-plan.XXXXXX")
    dir = out:gsub("%s+$", "")
  end)
  after_each(function() sh("rm -rf " .. plan.shquote(dir)) end)

  it("applies missing steps, records them, and a second apply does nothing", function()
    local steps = { file_step(dir, "a"), file_step(dir, "b") }
    local ctx = new_ctx()
    local ok, msg = plan.apply(steps, ctx)
    assert.is_true(ok, msg)
    assert.equal("2 steps made, 0 already in place", msg)
    assert.is_string(read(dir .. "/a")); assert.is_string(read(dir .. "/b"))
    assert.equal(2, #ctx.made)
    assert.same({ id = "file:a", what = "make a", inverse = steps[1].inverse, probe = steps[1].probe },
                ctx.made[1])
    assert.equal(2, ctx.saves())                   -- saved after every step
    ok, msg = plan.apply(steps, ctx)
    assert.is_true(ok)
    assert.equal("nothing to do: all 2 steps already in place", msg)
    assert.equal(2, #ctx.made)
  end)

  it("does not record what was already there, so destroy leaves it", function()
    sh("touch " .. dir .. "/a")
    local steps = { file_step(dir, "a"), file_step(dir, "b") }
    local ctx = new_ctx()
    assert.is_true((plan.apply(steps, ctx)))
    assert.equal(1, #ctx.made)
    assert.is_true((plan.destroy(ctx)))
    assert.is_string(read(dir .. "/a"))
    assert.is_nil(read(dir .. "/b"))
  end)

  it("undoes this run's steps newest first when a step fails", function()
    local bad = { id = "bad", what = "fail on purpose",
                  run = { { "sh", "-c", "echo no such device; exit 1" } }, inverse = {} }
    local steps = { file_step(dir, "a"), file_step(dir, "b"), bad, file_step(dir, "c") }
    local ctx = new_ctx()
    local ok, msg = plan.apply(steps, ctx)
    assert.is_false(ok)
    assert.equal("fail on purpose: 'sh -c 'echo no such device; exit 1'' failed: no such device; rolled back 2 steps", msg)
    assert.equal("b\na\n", read(dir .. "/undo.log"))
    assert.is_nil(read(dir .. "/a")); assert.is_nil(read(dir .. "/c"))
    assert.same({}, ctx.made)
  end)

  it("keeps steps of an earlier apply when this run rolls back", function()
    local ctx = new_ctx()
    assert.is_true((plan.apply({ file_step(dir, "a") }, ctx)))
    local bad = { id = "bad", what = "fail", run = { { "false" } } }
    local ok = plan.apply({ file_step(dir, "a"), file_step(dir, "b"), bad }, ctx)
    assert.is_false(ok)
    assert.is_string(read(dir .. "/a"))
    assert.is_nil(read(dir .. "/b"))
    assert.equal(1, #ctx.made)
    assert.equal("file:a", ctx.made[1].id)
  end)

  it("undoes a step that failed halfway", function()
    local half = { id = "half", what = "two commands, the second fails",
                   run = { { "touch", dir .. "/h" }, { "false" } },
                   probe = { { argv = { "test", "-e", dir .. "/h" } } },
                   inverse = { { "rm", "-f", dir .. "/h" } } }
    local ok, msg = plan.apply({ file_step(dir, "a"), half }, new_ctx())
    assert.is_false(ok)
    assert.matches("rolled back 2 steps", msg, 1, true)
    assert.is_nil(read(dir .. "/h"))
    assert.is_nil(read(dir .. "/a"))
  end)

  it("takes an expected complaint as success (pfctl -e: already enabled)", function()
    local s = { id = "enable", what = "enable", ok_output = "already enabled",
                run = { { "sh", "-c", "echo 'pfctl: pf already enabled'; exit 1" } }, inverse = {} }
    local ok, msg = plan.apply({ s }, new_ctx())
    assert.is_true(ok, msg)
    s.ok_output = nil
    assert.is_false((plan.apply({ s }, new_ctx())))
  end)

  it("refuses before making anything when a check fails", function()
    local check = { id = "check", what = "check", refuse = "add these lines",
                    probe = { { argv = { "test", "-e", dir .. "/anchor" } } } }
    local ctx = new_ctx()
    local ok, msg = plan.apply(plan.checks_first({ file_step(dir, "a"), check }), ctx)
    assert.is_false(ok)
    assert.equal("refused: add these lines", msg)
    assert.is_nil(read(dir .. "/a"))
    sh("touch " .. dir .. "/anchor")
    ok, msg = plan.apply({ check, file_step(dir, "a") }, ctx)
    assert.is_true(ok, msg)
    assert.equal("1 steps made, 1 already in place", msg)
  end)

  it("renames what the kernel named otherwise", function()
    local s = { id = "clone", what = "clone", run = { { "echo", "tap7" } },
                rename = { to = "tap1", argv = { { "touch", dir .. "/%s" }, { "touch", dir .. "/x" } } } }
    assert.same({ "touch", dir .. "/%s" }, s.rename.argv[1])
    s.rename.argv = { { "sh", "-c", "echo $0 > " .. dir .. "/renamed", "%s" },
                      { "sh", "-c", "echo $0 > " .. dir .. "/peer", "%p" } }
    s.run = { { "echo", "epair3a" } }
    assert.is_true((plan.apply({ s }, new_ctx())))
    assert.equal("epair3a\n", read(dir .. "/renamed"))
    assert.equal("epair3b\n", read(dir .. "/peer"))
    -- A rename that fails removes what the kernel made, then rolls back.
    local failing = { id = "clone2", what = "clone", run = { { "echo", "made7" } },
                      rename = { to = "want", argv = { { "false" } },
                                 cleanup = { "sh", "-c", "echo $0 > " .. dir .. "/cleaned", "%s" } } }
    local ok, msg = plan.apply({ failing }, new_ctx())
    assert.is_false(ok)
    assert.equal("clone: 'false' failed: ", msg)
    assert.equal("made7\n", read(dir .. "/cleaned"))
    s.run = { { "echo", "tap1" } }
    s.rename.to = "tap1"
    sh("rm " .. dir .. "/renamed")
    assert.is_true((plan.apply({ s }, new_ctx())))
    assert.is_nil(read(dir .. "/renamed"))       -- the kernel picked the wanted name
  end)

  it("dry run probes but changes nothing", function()
    local ctx = new_ctx(true)
    local ok, msg = plan.apply({ file_step(dir, "a") }, ctx)
    assert.is_true(ok)
    assert.equal("dry run: 1 steps would run, 0 already in place", msg)
    assert.equal("would run (make a):", ctx.lines[1])
    assert.equal("  touch " .. dir .. "/a", ctx.lines[2])
    assert.is_nil(read(dir .. "/a"))
    assert.same({}, ctx.made)
  end)

  it("destroys newest first, skipping what is already gone", function()
    local steps = { file_step(dir, "a"), file_step(dir, "b"), file_step(dir, "c") }
    local ctx = new_ctx()
    assert.is_true((plan.apply(steps, ctx)))
    os.remove(dir .. "/b")
    local ok, msg = plan.destroy(ctx)
    assert.is_true(ok, msg)
    assert.equal("2 steps undone, 1 already gone", msg)
    assert.equal("c\na\n", read(dir .. "/undo.log"))
    assert.same({}, ctx.made)
  end)

  it("undoes steps no longer in the topology before making new ones", function()
    local ctx = new_ctx()
    assert.is_true((plan.apply({ file_step(dir, "a"), file_step(dir, "b") }, ctx)))
    local rows = plan.status({ file_step(dir, "a") }, ctx)
    assert.equal("stale", rows[2].state)
    assert.equal("file:b", rows[2].step.id)
    local ok, msg = plan.apply({ file_step(dir, "a"), file_step(dir, "c") }, ctx)
    assert.is_true(ok, msg)
    assert.equal("1 steps made, 1 already in place, 1 steps no longer in the topology undone", msg)
    assert.is_nil(read(dir .. "/b"))
    assert.equal("b\n", read(dir .. "/undo.log"))
    assert.same({ "file:a", "file:c" }, { ctx.made[1].id, ctx.made[2].id })
  end)

  it("runs a step again when the config it follows changed, stopping it first", function()
    local conf = dir .. "/conf"
    local function steps(text)
      return {
        { id = "conf", what = "write conf", write = { path = conf, content = text },
          probe = { { file = conf, content = text } }, inverse = { { "rm", "-f", conf } } },
        { id = "daemon", what = "start", follows = "conf",
          run = { { "sh", "-c", "cp " .. conf .. " " .. dir .. "/running; echo start >> " .. dir .. "/log" } },
          probe = { { argv = { "test", "-e", dir .. "/running" } } },
          stop = { { "sh", "-c", "rm " .. dir .. "/running; echo stop >> " .. dir .. "/log" } },
          inverse = { { "rm", "-f", dir .. "/running" } } },
      }
    end
    local ctx = new_ctx()
    assert.is_true((plan.apply(steps("v1"), ctx)))
    local ok, msg = plan.apply(steps("v1"), ctx)
    assert.equal("nothing to do: all 2 steps already in place", msg)
    ok, msg = plan.apply(steps("v2"), ctx)
    assert.is_true(ok, msg)
    assert.equal("2 steps made, 0 already in place", msg)
    assert.equal("v2", read(dir .. "/running"))
    assert.equal("start\nstop\nstart\n", read(dir .. "/log"))
    assert.equal(2, #ctx.made)
    assert.matches("again:   when step conf changes", plan.format(steps("v2")), 1, true)
  end)

  it("runs a probe command once while nothing changes, again after a change", function()
    local counter = { argv = { "sh", "-c", "echo x >> " .. dir .. "/probes" } }
    local function step(name)
      return { id = name, what = name, probe = { counter, { argv = { "test", "-e", dir .. "/" .. name } } },
               run = { { "touch", dir .. "/" .. name } }, inverse = {} }
    end
    sh("touch " .. dir .. "/a " .. dir .. "/b")
    local ctx = new_ctx()
    plan.status({ step("a"), step("b") }, ctx)
    assert.equal("x\n", read(dir .. "/probes"))
    os.remove(dir .. "/probes")
    assert.is_true((plan.apply({ step("a"), step("c"), step("b") }, ctx)))
    assert.equal("x\nx\n", read(dir .. "/probes"))   -- a and c share one; after making c, b probes anew
  end)

  it("status tells ok, missing and drift apart", function()
    local steps = { file_step(dir, "a"), file_step(dir, "b"), file_step(dir, "c") }
    local ctx = new_ctx()
    assert.is_true((plan.apply({ steps[1], steps[2] }, ctx)))
    os.remove(dir .. "/b")
    local rows, all_ok = plan.status(steps, ctx)
    assert.is_false(all_ok)
    assert.same({ "ok", "drift", "missing" }, { rows[1].state, rows[2].state, rows[3].state })
  end)

  it("shares a host setting: the last topology to leave restores the value found first", function()
    -- A sysctl kept in a file, and host settings in a table, as state.host keeps them.
    local value = dir .. "/value"
    sh("echo 0 > " .. value)
    local settings = {}
    local function host(fn) return fn(settings) end
    local step = plan.sysctl_step("forwarding", "enable forwarding", "fwd", "1", { "set" })
    step.shared.get = { "cat", value }
    step.probe = { { argv = { "grep", "-qx", "1", value } } }
    local function run(argv)
      if argv[1] == "set" then return plan.runner()({ "sh", "-c", "echo " .. argv[2]:match("=(.*)") .. " > " .. value }) end
      return plan.runner()(argv)
    end
    local function ctx_for(user)
      local ctx = new_ctx()
      ctx.run, ctx.user, ctx.host, ctx.scope = run, user, host, "ns1"
      return ctx
    end
    local a, b = ctx_for("a"), ctx_for("b")
    assert.equal("1 steps made, 0 already in place", select(2, plan.apply({ step }, a)))
    assert.equal("1\n", read(value))
    assert.equal("nothing to do: all 1 steps already in place", select(2, plan.apply({ step }, b)))
    assert.same({ ["fwd@netns:ns1"] = { old = "0", users = { a = true, b = true } } }, settings)
    assert.is_true((plan.destroy(a)))
    assert.equal("1\n", read(value), "b still needs it")
    assert.matches("fwd stays 1: topologies b still need it", table.concat(a.lines, "\n"), 1, true)
    -- Someone turns it off meanwhile; b's next apply turns it on, the old value stays 0.
    sh("echo 0 > " .. value)
    assert.is_true((plan.apply({ step }, b)))
    assert.equal("1\n", read(value))
    assert.is_true((plan.destroy(b)))
    assert.equal("0\n", read(value), "back to the value before the first apply")
    assert.same({}, settings)
    -- A failed apply after the setting changed takes it back in the rollback.
    local c = ctx_for("c")
    local bad = { id = "bad", what = "fail", run = { { "false" } }, inverse = {} }
    assert.is_false((plan.apply({ step, bad }, c)))
    assert.equal("0\n", read(value))
    assert.same({}, settings)
  end)

  it("netbe.lock holds an flock until unlocked", function()
    local netbe = require("netbe")
    local path = dir .. "/lock"
    local lock = assert(netbe.lock(path))
    assert.is_false((sh("flock -n " .. path .. " true")))
    lock:unlock()
    assert.is_true((sh("flock -n " .. path .. " true")))
    do
      local held <close> = assert(netbe.lock(path))
      assert.is_false((sh("flock -n " .. path .. " true")))
    end
    assert.is_true((sh("flock -n " .. path .. " true")))
    local none, err = netbe.lock(dir .. "/no/such/dir/lock")
    assert.is_nil(none)
    assert.matches("cannot lock .*: No such file or directory", err)
  end)

  it("quotes every argument it hands to the shell", function()
    local run = plan.runner()
    local weird = "a b'c;$(echo x)\"*"
    local ok, out = run({ "printf", "%s", weird })
    assert.is_true(ok)
    assert.equal(weird, out)
    ok = run({ "false" })
    assert.is_false(ok)
  end)
end)

describe("Linux renderer", function()
  local function load_text(text)
    local path = ns.write(os.tmpname(), text)
    local t, err = topology.load(path)
    os.remove(path)
    return assert(t, err)
  end
  local FILES = "/var/lib/netbe/T"

  local commands = plan.commands

  it("renders the NAT recipe: bridge, tap, forwarding, one nft transaction, dnsmasq", function()
    local t = assert(topology.load("examples/topologies/nat.lua"))
    local steps = assert(render_linux.render(t, FILES))
    assert.same({
      "ip link add name natnet type bridge",
      "ip link set dev natnet alias netbe:natlab:bridge:natnet",
      "ip addr add 10.0.0.1/24 dev natnet",
      "ip link set dev natnet up",
      "ip tuntap add dev tap2 mode tap",
      "ip link set dev tap2 alias netbe:natlab:tap:tap2",
      "ip link set dev tap2 master natnet",
      "ip link set dev tap2 up",
      "sysctl -w net.ipv4.ip_forward=1",
      "write " .. FILES .. "/nft.conf",
      "nft -f " .. FILES .. "/nft.conf",
      "write " .. FILES .. "/dnsmasq-natnet.conf",
      "dnsmasq --conf-file=" .. FILES .. "/dnsmasq-natnet.conf",
    }, commands(steps))
    assert.equal(table.concat({
      "# netbe: NAT for topology natlab; written by netbe, do not edit",
      "table ip netbe_natlab {}",
      "delete table ip netbe_natlab",
      "table ip netbe_natlab {",
      "\tchain postrouting {",
      "\t\ttype nat hook postrouting priority srcnat; policy accept;",
      '\t\toifname "re1" ip saddr 10.0.0.0/24 ip daddr != 10.0.0.0/24 masquerade',
      "\t}", "}", "" }, "\n"), steps[8].write.content)
    assert.same({ { "nft", "delete", "table", "ip", "netbe_natlab" } }, steps[9].inverse)
  end)

  it("gives every step that makes something an inverse that takes it away", function()
    local t = assert(topology.load("examples/topologies/nat.lua"))
    for _, s in ipairs(render_linux.render(t, FILES)) do
      assert.is_table(s.probe, s.id)
      assert.is_table(s.inverse, s.id)
      if s.id:match("^bridge:") or s.id:match("^tap:") or s.id:match("^port:") or s.id == "nft"
         or s.id:match("^dnsmasq") then
        assert.is_true(#s.inverse > 0, s.id .. " has an inverse")
      end
    end
    -- Forwarding is a host setting other topologies may need: restored
    -- from the recorded value by the last one to go, never set to 0 blindly.
    local fwd
    for _, s in ipairs(render_linux.render(t, FILES)) do if s.id == "forwarding" then fwd = s end end
    assert.same({ name = "net.ipv4.ip_forward", value = "1", get = { "sysctl", "-n", "net.ipv4.ip_forward" },
                  set = { "sysctl", "-w" } }, fwd.shared)
    assert.same({}, fwd.inverse)
  end)

  it("renders VLANs: an 802.1Q uplink, a filtering bridge, access ports, isolation", function()
    local t = load_text([[
name = "v"
switches = { lan = { type = "bridge", uplink = "eth0", vlan = 20, mtu = 9000 },
             acc = { type = "bridge", uplink = "eth1", members = { "eth2" } } }
vms = { a = { nics = { { switch = "acc", ifname = "atap", vlan = 30, private = true } } },
        b = { nics = { { switch = "lan", ifname = "bveth", type = "veth", peer = "bpeer" } } } }
]])
    assert.same({
      "ip link add name acc type bridge vlan_filtering 1",
      "ip link set dev acc alias netbe:v:bridge:acc",
      "ip link set dev eth1 master acc",
      "ip link set dev eth2 master acc",
      "ip link set dev acc up",
      "ip link add name lan type bridge",
      "ip link set dev lan alias netbe:v:bridge:lan",
      "ip link set dev lan mtu 9000",
      "ip link add link eth0 name eth0.20 type vlan id 20",
      "ip link set dev eth0.20 alias netbe:v:vlan:eth0.20",
      "ip link set dev eth0.20 up",
      "ip link set dev eth0.20 master lan",
      "ip link set dev lan up",
      "ip tuntap add dev atap mode tap",
      "ip link set dev atap alias netbe:v:tap:atap",
      "ip link set dev atap master acc",
      "ip link set dev atap type bridge_slave isolated on",
      "bridge vlan add dev atap vid 30 pvid untagged",
      "bridge vlan del dev atap vid 1",
      "bridge vlan add dev eth1 vid 30",
      "ip link set dev atap up",
      "ip link add name bveth type veth peer name bpeer",
      "ip link set dev bveth alias netbe:v:veth:bveth",
      "ip link set dev bveth master lan",
      "ip link set dev bveth up",
    }, commands(assert(render_linux.render(t, FILES))))
  end)
end)
