-- The Linux renderer applied for real inside namespaces made here: the
-- topology lives in namespace T (netbe runs every command through
-- `--netns T`), guests are namespaces joined to the topology's taps by
-- `netbe wire`, and NAT goes out through a veth into a service namespace
-- that has no route back, so only masquerade lets replies return. Nothing
-- leaves the machine.
local ns = require("ns")

local reason = ns.skip_unless_root("nft", "dnsmasq", "busybox", "bridge")

-- Processes this spec starts (each a session leader: ns spawns with
-- setsid) and topologies it applies; stopped and destroyed at teardown
-- even when a test fails, before ns.cleanup removes the namespaces.
local started, applied = {}, {}

local function spawn(n, cmd)
  local pid, log = n:spawn(cmd)
  started[#started + 1] = pid
  return pid, log
end

local stop = ns.kill

-- Runs `netbe CMD FILE --os linux --netns T` with the test's state dir.
local function netbe(env, cmd, file, extra)
  return ns.sh("NETBE_STATE_DIR=" .. ns.quote(env.state) .. " " .. ns.netbe .. " " .. cmd .. " "
               .. ns.quote(file) .. " --os linux --netns " .. env.t.name .. " " .. (extra or ""))
end

local write = ns.write

-- A fresh topology namespace, state dir and topology file.
local function setup_env(topology_text)
  local env = { t = ns.new("topo"), state = ns.tmpdir() .. "/state" }
  env.file = write(ns.tmpdir() .. "/topo.lua", topology_text)
  applied[#applied + 1] = env
  return env
end

local function cleanup()
  for i = #started, 1, -1 do stop(started[i]) end
  for _, env in ipairs(applied) do netbe(env, "destroy", env.file) end
  started, applied = {}, {}
  ns.cleanup()
end

-- Interfaces in namespace N, by name, from `ip -j link` (parsed just enough:
-- name, master, flags).
local function links(nsname)
  local ok, out = ns.sh("ip -n " .. nsname .. " -o link show")
  assert(ok, out)
  local res = {}
  for line in out:gmatch("[^\n]+") do
    local name, flags = line:match("^%d+: ([^:@]+)[^:]*: <([^>]*)>")
    if name then
      res[name] = { flags = flags, master = line:match(" master (%S+) "), up = flags:match("%f[%w]UP%f[^%w_]") ~= nil }
    end
  end
  return res
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Joins the topology's NIC (its netbe config string, from bhyve-args) to a
-- new guest namespace: `netbe wire NIC GUESTTAP` in T, then GUESTTAP moves
-- into the guest. Returns the guest namespace and the tap's name there.
local function guest(env, vm, addr)
  local ok, nic = netbe(env, "bhyve-args", env.file, "--vm " .. vm .. " --netbe")
  assert(ok, nic)
  nic = nic:match("^(%S+)")
  local g = ns.new("guest")
  local gtap = ns.unique("tap")
  local pid, log = spawn(env.t, ns.netbe .. " wire " .. ns.quote(nic) .. " " .. gtap)
  if not ns.wait_for("ip -n " .. env.t.name .. " link show " .. gtap .. " >/dev/null 2>&1", 5) then
    local _, text = ns.sh("cat " .. log)
    error("netbe wire " .. nic .. " " .. gtap .. " did not make " .. gtap .. ": " .. text)
  end
  local moved, out = ns.sh("ip -n " .. env.t.name .. " link set " .. gtap .. " netns " .. g.name
                           .. " && ip -n " .. g.name .. " link set " .. gtap .. " up")
  assert(moved, out)
  if addr then assert(g:exec("ip addr add " .. addr .. " dev " .. gtap)) end
  return g, gtap, pid
end

-- What the state dir holds besides the lock of the host settings (a lock
-- file stays: removing one races with whoever waits for it).
local function state_files(env)
  local _, out = ns.sh("find " .. ns.quote(env.state) .. " -mindepth 1 ! -name host.lock")
  return out
end

describe("linux topology: bridge with taps", function()
  teardown(cleanup)
  if reason then pending(reason) return end

  it("applies, joins two guests that then talk, is idempotent, and destroys to nothing", function()
    local env = setup_env([[
name = "twotaps"
switches = { lan = { type = "bridge", address = "192.168.50.1/24", mtu = 1400 } }
vms = {
  g1 = { nics = { { switch = "lan", ifname = "g1tap", mac = "52:54:00:00:50:11" } } },
  g2 = { nics = { { switch = "lan", ifname = "g2tap" } } },
}
]])
    local ok, out = netbe(env, "apply", env.file, "--dry-run")
    assert.is_true(ok, out)
    assert.matches("dry run: 10 steps would run", out)
    assert.equal(1, count(links(env.t.name)))        -- only lo: dry run made nothing

    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("apply twotaps: 10 steps made, 0 already in place", out, 1, true)
    local l = links(env.t.name)
    assert.is_truthy(l.lan and l.lan.up)
    assert.equal("lan", l.g1tap.master)
    assert.equal("lan", l.g2tap.master)
    assert.is_true(l.g1tap.up and l.g2tap.up)
    local _, mtu = ns.sh("ip -n " .. env.t.name .. " -o link show lan")
    assert.matches(" mtu 1400 ", mtu)
    local _, addr = ns.sh("ip -n " .. env.t.name .. " -o -4 addr show dev lan")
    assert.matches("inet 192.168.50.1/24 ", addr, 1, true)

    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("apply twotaps: nothing to do: all 10 steps already in place", out, 1, true)
    assert.not_matches("ip link", out)

    ok, out = netbe(env, "status", env.file)
    assert.is_true(ok, out)
    assert.matches("status: 10 ok, 0 missing, 0 drifted", out, 1, true)

    local g1, t1, w1 = guest(env, "g1", "192.168.50.11/24")
    local g2, _, w2 = guest(env, "g2", "192.168.50.12/24")
    ok, out = g1:exec("ping -c 2 -i 0.2 -W 3 192.168.50.12")
    assert.is_true(ok, "g1 -> g2 through the topology's bridge: " .. out)
    ok, out = g2:exec("ping -c 1 -W 3 192.168.50.1")
    assert.is_true(ok, "g2 -> the bridge's address: " .. out)
    local _, mac = g1:exec("cat /sys/class/net/" .. t1 .. "/address")
    assert.is_string(mac)

    stop(w1); stop(w2)                             -- the VMs stop before their network goes
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.matches("destroy twotaps: 10 steps undone, 0 already gone", out, 1, true)
    l = links(env.t.name)
    assert.is_nil(l.lan); assert.is_nil(l.g1tap); assert.is_nil(l.g2tap)
    assert.equal("", state_files(env))

    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.matches("nothing recorded", out)
  end)

  it("rolls back the steps already made when one fails halfway", function()
    local env = setup_env([[
name = "broken"
switches = { lan = { type = "bridge", uplink = "nosuch0", address = "192.168.51.1/24" } }
vms = { g = { nics = { { switch = "lan", ifname = "gtap" } } } }
]])
    local ok, out = netbe(env, "apply", env.file)
    assert.is_false(ok)
    assert.matches("# create bridge lan\nip link add name lan type bridge\n", out, 1, true)
    assert.matches("apply broken: add nosuch0 to bridge lan: 'ip link set dev nosuch0 master lan' failed", out, 1, true)
    assert.matches("rolled back 1 steps", out, 1, true)
    assert.matches("ip link del dev lan", out, 1, true)
    assert.equal(1, count(links(env.t.name)))   -- the bridge made before the failure is gone
    local st = assert(loadfile(env.state .. "/broken.state", "t", {}))()
    assert.same({}, st.made)
    ok, out = netbe(env, "status", env.file)
    assert.is_false(ok)
    assert.matches("missing  create bridge lan", out, 1, true)
  end)

  it("reports drift when a link it made is removed, and apply repairs only that", function()
    local env = setup_env([[
name = "drifty"
switches = { lan = { type = "bridge" } }
vms = { g = { nics = { { switch = "lan", ifname = "gtap", private = true } } } }
]])
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.is_true((ns.sh("ip -n " .. env.t.name .. " link del gtap")))
    ok, out = netbe(env, "status", env.file)
    assert.is_false(ok)
    assert.matches("drift    create tap gtap for g   (made by netbe, changed or removed since)", out, 1, true)
    assert.matches("drift    add gtap to bridge lan", out, 1, true)
    assert.matches("ok       create bridge lan", out, 1, true)
    assert.matches("status: 2 ok, 0 missing, 4 drifted", out, 1, true)
    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("4 steps made, 2 already in place", out, 1, true)
    local _, d = ns.sh("ip -n " .. env.t.name .. " -d -o link show dev gtap")
    assert.matches("isolated on", d, 1, true)
    ok = netbe(env, "status", env.file)
    assert.is_true(ok)
    ok, out = netbe(env, "destroy", env.file, "--dry-run")
    assert.is_true(ok, out)
    assert.matches("would undo (create tap gtap for g):\n  ip link del dev gtap\n", out, 1, true)
    assert.is_truthy(links(env.t.name).gtap)      -- a dry run removes nothing
    -- A damaged state file stops destroy with its name instead of guessing.
    local sf = env.state .. "/drifty.state"
    local saved = assert(io.open(sf)):read("a")
    write(sf, "return {")
    ok, out = netbe(env, "destroy", env.file)
    assert.is_false(ok)
    assert.matches(sf .. ": corrupt state file", out, 1, true)
    write(sf, saved)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.equal(1, count(links(env.t.name)))
  end)

  it("plugs a veth NIC into the bridge for a container-style guest", function()
    local env = setup_env([[
name = "veths"
switches = { lan = { type = "bridge", address = "192.168.53.1/24" } }
vms = { c = { nics = { { switch = "lan", type = "veth", ifname = "cveth", peer = "cpeer" } } } }
]])
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.equal("lan", links(env.t.name).cveth.master)
    local g = ns.new("guest")
    assert(ns.sh("ip -n " .. env.t.name .. " link set cpeer netns " .. g.name))
    assert(g:exec("ip addr add 192.168.53.7/24 dev cpeer && ip link set cpeer up"))
    ok, out = g:exec("ping -c 1 -W 3 192.168.53.1")
    assert.is_true(ok, out)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.is_nil(links(g.name).cpeer)           -- deleting one end took the peer too
    assert.equal(1, count(links(env.t.name)))
  end)

  it("uses an existing bridge as is and leaves it on destroy", function()
    local env = setup_env([[
name = "reuse"
switches = { lan = { type = "existing", interface = "pre0" } }
vms = { g = { nics = { { switch = "lan", ifname = "gtap" } } } }
]])
    local ok, out = netbe(env, "apply", env.file)
    assert.is_false(ok)
    assert.matches("refused: switch lan uses the existing interface pre0, which does not exist", out, 1, true)
    assert.equal(1, count(links(env.t.name)))
    assert.is_true((ns.sh("ip -n " .. env.t.name .. " link add pre0 type bridge && ip -n "
                          .. env.t.name .. " addr add 192.168.52.1/24 dev pre0")))
    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.equal("pre0", links(env.t.name).gtap.master)
    -- The VM leaves the file: status calls its tap stale, apply removes it.
    write(env.file, 'name = "reuse"\nswitches = { lan = { type = "existing", interface = "pre0" } }\n')
    ok, out = netbe(env, "status", env.file)
    assert.is_false(ok)
    assert.matches("stale    create tap gtap for g", out, 1, true)
    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("0 steps made, 1 already in place, 3 steps no longer in the topology undone", out, 1, true)
    assert.is_nil(links(env.t.name).gtap)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    local l = links(env.t.name)
    assert.is_truthy(l.pre0)
    local _, addr = ns.sh("ip -n " .. env.t.name .. " -o -4 addr show dev pre0")
    assert.matches("192.168.52.1/24", addr, 1, true)
  end)
end)

describe("linux topology: NAT switch", function()
  teardown(cleanup)
  if reason then pending(reason) return end

  it("gives a guest a DHCP lease and masquerades it to a service, then destroys to nothing", function()
    local env = setup_env([[
name = "natlab"
switches = {
  nat0 = { type = "nat", address = "10.0.0.1/24", outbound = "up0",
           dhcp = { range = { "10.0.0.100", "10.0.0.120" }, lease = "1h" } },
}
vms = { app = { nics = { { switch = "nat0", ifname = "apptap", mac = "52:54:00:00:00:42" } } } }
]])
    -- The "outside": namespace S behind veth up0, with no route to 10.0.0.0/24.
    local s = ns.new("svc")
    local t = env.t.name
    assert(ns.sh("ip -n " .. t .. " link add up0 type veth peer name svc0 netns " .. s.name
                 .. " && ip -n " .. t .. " addr add 192.168.77.2/24 dev up0 && ip -n " .. t
                 .. " link set up0 up && ip -n " .. s.name .. " addr add 192.168.77.1/24 dev svc0"
                 .. " && ip -n " .. s.name .. " link set svc0 up"))
    local www = ns.tmpdir()
    write(www .. "/index.html", "hello from the service namespace\n")
    spawn(s, "busybox httpd -f -p 192.168.77.1:8080 -h " .. www)

    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    local _, nft = ns.sh("ip netns exec " .. t .. " nft list table ip netbe_natlab")
    assert.matches('oifname "up0" ip saddr 10.0.0.0/24 ip daddr != 10.0.0.0/24 masquerade', nft, 1, true)
    local _, fwd = ns.sh("ip netns exec " .. t .. " sysctl -n net.ipv4.ip_forward")
    assert.equal("1", fwd:match("%d"))
    local pidfile = env.state .. "/natlab/dnsmasq-nat0.pid"
    local f = assert(io.open(pidfile))
    local dpid = f:read("n")
    f:close()
    assert.is_true(ns.alive(dpid))

    local g, gtap, wire = guest(env, "app")
    local script = write(ns.tmpdir() .. "/udhcpc.sh", [[
#!/bin/sh
case "$1" in
bound|renew)
  busybox ifconfig "$interface" "$ip" netmask "$subnet"
  busybox route add default gw "$router" dev "$interface"
  echo "LEASE ip=$ip router=$router" ;;
esac
]])
    ns.sh("chmod +x " .. script)
    ok, out = g:exec("busybox udhcpc -i " .. gtap .. " -n -q -t 5 -T 1 -s " .. script)
    assert.is_true(ok, out)
    local ip = out:match("LEASE ip=(10%.0%.0%.1[0-2]%d) router=10%.0%.0%.1\n")
    assert.is_string(ip, "no lease from netbe's dnsmasq in: " .. out)
    assert.is_true(ns.wait_for("grep -q " .. ip .. " " .. env.state .. "/natlab/dnsmasq-nat0.leases", 3))

    ok, out = g:exec("timeout 5 busybox wget -q -O - http://192.168.77.1:8080/")
    assert.is_true(ok, out)
    assert.equal("hello from the service namespace\n", out)

    -- (busybox 1.35's wget crashes with -T, hence timeout(1).)
    -- Without the masquerade (removed behind netbe's back) replies cannot
    -- come back; status calls it drift; apply puts back only the table.
    assert.is_true((ns.sh("ip netns exec " .. t .. " nft delete table ip netbe_natlab")))
    ok, out = g:exec("timeout 2 busybox wget -q -O - http://192.168.77.1:8080/")
    assert.is_false(ok)
    ok, out = netbe(env, "status", env.file)
    assert.is_false(ok)
    assert.matches("drift    load table ip netbe_natlab in one transaction", out, 1, true)
    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("1 steps made", out, 1, true)
    ok, out = g:exec("timeout 5 busybox wget -q -O - http://192.168.77.1:8080/")
    assert.is_true(ok, out)

    -- A new DHCP range rewrites the config and restarts netbe's dnsmasq.
    local text = assert(io.open(env.file)):read("a")
    write(env.file, (text:gsub('"10.0.0.100", "10.0.0.120"', '"10.0.0.130", "10.0.0.140"')))
    ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.matches("2 steps made, 9 already in place", out, 1, true)
    assert.matches("start dnsmasq serving DHCP on nat0 (again: dnsmasq-conf:nat0 changed)", out, 1, true)
    f = assert(io.open(pidfile))
    local dpid2 = f:read("n")
    f:close()
    assert.not_equal(dpid, dpid2)
    assert.is_true(ns.alive(dpid2))
    assert.matches("dhcp-range=10.0.0.130,10.0.0.140,", assert(io.open(env.state .. "/natlab/dnsmasq-nat0.conf")):read("a"), 1, true)
    dpid = dpid2

    stop(wire)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    ok = ns.sh("ip netns exec " .. t .. " nft list table ip netbe_natlab")
    assert.is_false(ok)
    -- Gone, or a zombie waiting for a reaper that is not ours.
    assert.is_true(ns.wait_for(function()
      local _, st = ns.sh("ps -o stat= -p " .. dpid)
      return not st:match("[RSD]")
    end, 5))
    local l = links(t)
    assert.is_nil(l.nat0); assert.is_nil(l.apptap)
    assert.is_truthy(l.up0)                      -- not netbe's: untouched
    local _, fwd2 = ns.sh("ip netns exec " .. t .. " sysctl -n net.ipv4.ip_forward")
    assert.equal("0", fwd2:match("%d"))
    assert.equal("", state_files(env))
  end)
end)

describe("linux topology: VLANs", function()
  teardown(cleanup)
  if reason then pending(reason) return end
  -- Probe the kernel: some lack 802.1Q links or bridge VLAN filtering.
  local probe = ns.new("vlanprobe")
  local filtering, ferr = probe:exec("ip link add b0 type bridge vlan_filtering 1")
  local dot1q, qerr = probe:exec("ip link add v0 type veth peer name v1 && ip link add link v0 name v0.5 type vlan id 5")

  local it_filtering = filtering and it or function(name)
    pending(name .. " (this kernel lacks bridge VLAN filtering: " .. ferr:gsub("%s+$", "") .. ")")
  end
  local it_dot1q = dot1q and it or function(name)
    pending(name .. " (this kernel lacks 802.1Q VLAN links: " .. qerr:gsub("%s+$", "") .. ")")
  end

  it_filtering("puts a tap on an untagged VLAN of a filtering bridge", function()
    local env = setup_env([[
name = "vlans"
switches = { lan = { type = "bridge" } }
vms = { g = { nics = { { switch = "lan", ifname = "gtap", vlan = 30 } } } }
]])
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    local _, v = ns.sh("ip netns exec " .. env.t.name .. " bridge vlan show dev gtap")
    assert.matches("30 PVID", v, 1, true)
    ok, out = netbe(env, "apply", env.file)
    assert.matches("nothing to do", out)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
  end)

  it_dot1q("bridges a VLAN of the uplink", function()
    local env = setup_env([[
name = "trunk"
switches = { lan = { type = "bridge", uplink = "up0", vlan = 20 } }
]])
    assert(ns.sh("ip -n " .. env.t.name .. " link add up0 type veth peer name up1"))
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    assert.equal("lan", links(env.t.name)["up0.20"].master)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.is_nil(links(env.t.name)["up0.20"])
    assert.is_truthy(links(env.t.name).up0)
  end)
end)

describe("linux topology: host settings shared by topologies", function()
  teardown(cleanup)
  if reason then pending(reason) return end

  local function forwarding(t)
    local _, v = ns.sh("ip netns exec " .. t .. " sysctl -n net.ipv4.ip_forward")
    return v:match("%d")
  end

  -- Two NAT topologies in namespace T sharing one state dir, as on a host.
  local function two_nats(initial)
    local a = setup_env([[
name = "nata"
switches = { swa = { type = "nat", address = "10.61.0.1/24", outbound = "up0" } }
]])
    local b = { t = a.t, state = a.state, file = write(ns.tmpdir() .. "/b.lua", [[
name = "natb"
switches = { swb = { type = "nat", address = "10.62.0.1/24", outbound = "up0" } }
]]) }
    applied[#applied + 1] = b
    assert(ns.sh("ip -n " .. a.t.name .. " link add up0 type veth peer name up1"))
    assert(ns.sh("ip netns exec " .. a.t.name .. " sysctl -qw net.ipv4.ip_forward=" .. initial))
    return a, b
  end

  it("keeps IPv4 forwarding on while another NAT topology needs it, then restores it", function()
    local a, b = two_nats(0)
    local t = a.t.name
    local ok, out = netbe(a, "apply", a.file)
    assert.is_true(ok, out)
    assert.equal("1", forwarding(t))
    ok, out = netbe(b, "apply", b.file)
    assert.is_true(ok, out)
    assert.equal("1", forwarding(t))

    ok, out = netbe(a, "destroy", a.file)
    assert.is_true(ok, out)
    assert.equal("1", forwarding(t), "natb's NAT still forwards")
    assert.is_true((ns.sh("ip netns exec " .. t .. " nft list table ip netbe_natb")))
    assert.matches("net.ipv4.ip_forward stays 1: topologies natb still need it", out, 1, true)
    local host = assert(loadfile(a.state .. "/host.state", "t", {}))()
    assert.same({ old = "0", users = { natb = true } }, host["net.ipv4.ip_forward@netns:" .. t])

    ok, out = netbe(b, "destroy", b.file)
    assert.is_true(ok, out)
    assert.matches("sysctl -w net.ipv4.ip_forward=0", out, 1, true)
    assert.equal("0", forwarding(t), "the value before the first apply")
    assert.is_nil(io.open(a.state .. "/host.state"))
  end)

  it("leaves forwarding on when it was on before netbe", function()
    local a, b = two_nats(1)
    local t = a.t.name
    assert.is_true((netbe(a, "apply", a.file)))
    assert.is_true((netbe(b, "apply", b.file)))
    assert.is_true((netbe(b, "destroy", b.file)))
    local ok, out = netbe(a, "destroy", a.file)
    assert.is_true(ok, out)
    assert.not_matches("ip_forward=", out)
    assert.equal("1", forwarding(t))
  end)
end)

describe("linux topology: destroy removes only the interfaces netbe made", function()
  teardown(cleanup)
  if reason then pending(reason) return end

  local TOPO = [[
name = "marked"
switches = { lan = { type = "bridge", address = "192.168.54.1/24" } }
vms = { g = { nics = { { switch = "lan", ifname = "gtap" } } } }
]]

  local function ifindex(t, ifname)
    local _, out = ns.sh("ip -n " .. t .. " -o link show dev " .. ifname)
    return tonumber(out:match("^(%d+):")), out:match("\\%s+alias (%S+)")
  end

  it("marks what it makes and leaves a same-named bridge someone else made", function()
    local env = setup_env(TOPO)
    local t = env.t.name
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    local index, alias = ifindex(t, "lan")
    assert.equal("netbe:marked:bridge:lan", alias)
    local st = assert(loadfile(env.state .. "/marked.state", "t", {}))()
    assert.equal(index, st.made[1].owns.ifindex)
    assert.equal("bridge:lan", st.made[1].id)

    -- Someone deletes the bridge and makes their own of the same name.
    assert(ns.sh("ip -n " .. t .. " link del lan && ip -n " .. t .. " link add lan type bridge && ip -n "
                 .. t .. " addr add 192.168.54.1/24 dev lan && ip -n " .. t .. " link set lan up"))
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.matches("# left alone: create bridge lan: lan is not the interface netbe made (it has no marker, "
                   .. "expected marker netbe:marked:bridge:lan)", out, 1, true)
    assert.matches("# left alone: address 192.168.54.1/24 on lan", out, 1, true)
    assert.matches("destroy marked: 2 steps undone, 0 already gone, 4 left alone (not netbe's)", out, 1, true)
    local l = links(t)
    assert.is_truthy(l.lan, "their bridge stays")
    assert.is_true(l.lan.up)
    local _, addr = ns.sh("ip -n " .. t .. " -o -4 addr show dev lan")
    assert.matches("192.168.54.1/24", addr, 1, true)
    assert.is_nil(l.gtap, "netbe's own tap went")
  end)

  it("still knows its bridge when it comes back with the marker and a new ifindex (a reboot)", function()
    local env = setup_env(TOPO)
    local t = env.t.name
    local ok, out = netbe(env, "apply", env.file)
    assert.is_true(ok, out)
    local index = ifindex(t, "lan")
    assert(ns.sh("ip -n " .. t .. " link del lan && ip -n " .. t .. " link add lan type bridge && ip -n "
                 .. t .. " link set dev lan alias netbe:marked:bridge:lan"))
    local again = ifindex(t, "lan")
    assert.not_equal(index, again)
    ok, out = netbe(env, "destroy", env.file)
    assert.is_true(ok, out)
    assert.matches("# lan has ifindex " .. again .. ", not " .. index .. " as made", out, 1, true)
    assert.not_matches("left alone", out)
    assert.is_nil(links(t).lan)
    assert.is_nil(links(t).gtap)
  end)
end)
