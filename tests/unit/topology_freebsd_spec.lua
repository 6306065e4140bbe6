-- Golden tests of the FreeBSD renderer: the exact argv of the recipes
-- people use (netgraph bridge, bridged, NAT with pf), from the files in
-- examples/topologies/.
local topology = require("netbe.topology")
local render = require("netbe.render_freebsd")
local bhyve = require("netbe.bhyve")
local plan = require("netbe.plan")

local FILES = "/var/lib/netbe/T"

local function load_example(name)
  local t, err = topology.load("examples/topologies/" .. name .. ".lua")
  assert(t, err)
  return t
end

local function load_text(text)
  local env = {}
  assert(load(text, "=t", "t", env))()
  local t, err = topology.check(env, "t.lua", "t")
  assert(t, err)
  return t
end

local commands = plan.commands

local function find(steps, id)
  for _, s in ipairs(steps) do if s.id == id then return s end end
end

describe("FreeBSD netgraph bridge recipe", function()
  local t = load_example("netgraph")
  local steps = assert(render.render(t, FILES))

  it("loads the modules and builds the bridge with ngctl, exactly", function()
    assert.same({
      "kldload -nq ng_ether ng_bridge",
      "ngctl mkpeer re0: bridge lower link0",
      "ngctl name re0:lower bnet0",
      "ngctl connect re0: bnet0: upper link1",
      "ngctl msg re0: setpromisc 1",
      "ngctl msg re0: setautosrc 0",
    }, commands(steps))
  end)

  it("guards the whole bridge with ngctl status and undoes it with shutdown", function()
    local s = find(steps, "netgraph:bnet0")
    assert.same({ { argv = { "ngctl", "status", "bnet0:" } } }, s.probe)
    assert.same({ { "ngctl", "shutdown", "bnet0:" }, { "ngctl", "msg", "re0:", "setpromisc", "0" },
                  { "ngctl", "msg", "re0:", "setautosrc", "1" } }, s.inverse)
    assert.same({ { argv = { "kldstat", "-q", "-m", "ng_ether" } },
                  { argv = { "kldstat", "-q", "-m", "ng_bridge" } } }, steps[1].probe)
    assert.same({}, steps[1].inverse)
  end)

  it("emits the same commands as one ngctl -f- script", function()
    assert.equal("mkpeer re0: bridge lower link0\nname re0:lower bnet0\n"
                 .. "connect re0: bnet0: upper link1\nmsg re0: setpromisc 1\nmsg re0: setautosrc 0\n",
                 find(steps, "netgraph:bnet0").script)
    assert.matches("as one ngctl script (ngctl -f-):\n            | mkpeer re0: bridge lower link0",
                   plan.format(steps), 1, true)
  end)

  it("gives the VM link2 as its bhyve argument", function()
    assert.equal("-s 2:0,virtio-net,netgraph,path=bnet0:,peerhook=link2", bhyve.arg(t.vms.web.nics[1]))
    assert.equal("netgraph,path=bnet0:,peerhook=link2", bhyve.netbe(t.vms.web.nics[1]))
  end)

  it("numbers links in file order, keeps explicit ones, and can leave it to the kernel", function()
    local t2 = load_text([[
switches = { bnet0 = { type = "netgraph", uplink = "em0.10", persistent = true },
             bnet1 = { type = "netgraph", uplink = "em1", autolink = true } }
vms = { a = { nics = { { switch = "bnet0" }, { switch = "bnet0", link = 2, socket = "vm_a" },
                       { switch = "bnet1", mac = "58:9C:FC:00:00:01" } } },
        b = { nics = { { switch = "bnet0", type = "ngd", device = "ngd3" } } } }
]])
    assert.equal("-s 5:0,virtio-net,netgraph,path=bnet0:,peerhook=link3", bhyve.arg(t2.vms.a.nics[1]))
    assert.equal("-s 6:0,virtio-net,netgraph,path=bnet0:,peerhook=link2,socket=vm_a",
                 bhyve.arg(t2.vms.a.nics[2]))
    assert.equal("-s 7:0,virtio-net,netgraph,path=bnet1:,peerhook=link,mac=58:9c:fc:00:00:01",
                 bhyve.arg(t2.vms.a.nics[3]))
    assert.equal("-s 5:0,virtio-net,ngd3", bhyve.arg(t2.vms.b.nics[1]))
    local s = assert(render.render(t2, FILES))
    -- ng_ether's node for em0.10 is em0_10; persistent bridges get setpersistent.
    assert.same({
      "kldload -nq ng_ether ng_bridge",
      "ngctl mkpeer em0_10: bridge lower link0", "ngctl name em0_10:lower bnet0",
      "ngctl connect em0_10: bnet0: upper link1", "ngctl msg em0_10: setpromisc 1",
      "ngctl msg em0_10: setautosrc 0", "ngctl msg bnet0: setpersistent",
      "ngctl mkpeer em1: bridge lower link0", "ngctl name em1:lower bnet1",
      "ngctl connect em1: bnet1: upper link1", "ngctl msg em1: setpromisc 1",
      "ngctl msg em1: setautosrc 0",
    }, commands(s))
  end)
end)

describe("FreeBSD bridged recipe", function()
  local t = load_example("bridged")
  local steps = assert(render.render(t, FILES))

  it("creates the bridge, adds the uplink and the VM's tap, exactly", function()
    assert.same({
      "ifconfig bridge create name brext",
      "ifconfig brext description netbe:bridged:bridge:brext",
      "ifconfig brext addm re1",
      "ifconfig brext up",
      "ifconfig tap create up",
      "ifconfig tap1 description netbe:bridged:tap:tap1",
      "ifconfig brext addm tap1",
    }, commands(steps))
  end)

  it("marks what it creates with a description, and undoes it only while the mark is there", function()
    local s = find(steps, "bridge:brext")
    assert.same({ ifname = "brext", marker = "netbe:bridged:bridge:brext", show = { "ifconfig", "brext" },
                  marker_pattern = "\n%s*description: ([^\n]*)" }, s.owns)
    local out = "brext: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
      .. "\tdescription: %s\n\tether 58:9c:fc:10:ff:c1\n"
    local function shows(text) return function() return true, text end end
    assert.equal("mine", plan.identify(s.owns, shows(out:format("netbe:bridged:bridge:brext"))))
    assert.equal("foreign", plan.identify(s.owns, shows(out:format("uplink to the lab"))))
    assert.equal("foreign", plan.identify(s.owns, shows("brext: flags=8843<UP> mtu 1500\n\tether x\n")))
    assert.equal("gone", plan.identify(s.owns, function() return false, "does not exist" end))
    assert.same({ "brext", "tap1" }, find(steps, "port:brext:tap1").touches)
  end)

  it("renames the tap the kernel made when it is not tap1, and probes by name", function()
    local s = find(steps, "tap:tap1")
    assert.same({ to = "tap1", argv = { { "ifconfig", "%s", "name", "tap1" } },
                  cleanup = { "ifconfig", "%s", "destroy" } }, s.rename)
    assert.same({ "ifconfig", "tap0", "name", "tap1" }, plan.substitute(s.rename.argv[1], "tap0"))
    assert.same({ { argv = { "ifconfig", "tap1" } } }, s.probe)
    assert.same({ { "ifconfig", "tap1", "destroy" } }, s.inverse)
  end)

  it("undoes each step with its inverse", function()
    assert.same({ { "ifconfig", "brext", "destroy" } }, find(steps, "bridge:brext").inverse)
    assert.same({ { "ifconfig", "brext", "deletem", "re1" } }, find(steps, "port:brext:re1").inverse)
    assert.same({ { argv = { "ifconfig", "brext" }, plain = "member: tap1 " } },
                find(steps, "port:brext:tap1").probe)
  end)

  it("gives the VM tap1 in slot 5", function()
    assert.equal("-s 5,virtio-net,tap1", bhyve.arg(t.vms.db.nics[1]))
    assert.equal("tap1", bhyve.netbe(t.vms.db.nics[1]))
  end)

  it("renders VLAN uplinks, MTU, addresses and private ports", function()
    local s = assert(render.render(load_example("lab"), FILES))
    assert.same({
      "ifconfig bridge create name trunk", "ifconfig trunk description netbe:lab:bridge:trunk",
      "ifconfig trunk mtu 9000",
      "ifconfig re1.20 create", "ifconfig re1.20 description netbe:lab:vlan:re1.20",
      "ifconfig re1.20 up", "ifconfig trunk addm re1.20",
      "ifconfig trunk inet 192.168.20.1/24 alias", "ifconfig trunk up",
      "ifconfig tap create up", "ifconfig tap10 description netbe:lab:tap:tap10",
      "ifconfig trunk addm tap10", "ifconfig trunk private tap10",
      "ifconfig tap create up", "ifconfig tap11 description netbe:lab:tap:tap11",
      "ifconfig bridge0 addm tap11",
    }, commands(s))
    assert.equal("exists:bridge0", s[1].id)          -- checks come first
  end)

  it("refuses per-port VLANs, which it cannot render", function()
    local t2 = load_text([[switches = { lan = { type = "bridge" } }
vms = { v = { nics = { { switch = "lan", vlan = 7 } } } }]])
    local s, err = render.render(t2, FILES)
    assert.is_nil(s)
    assert.equal("vms.v.nics[1].vlan: per-port VLANs need bridge VLAN filtering, which the FreeBSD "
                 .. "renderer does not do; use a switch with vlan = 7 instead", err)
  end)
end)

describe("FreeBSD NAT recipe", function()
  local t = load_example("nat")
  local steps = assert(render.render(t, FILES))

  it("runs exactly these commands", function()
    assert.same({
      "kldload -nq pf",
      "ifconfig bridge create name natnet",
      "ifconfig natnet description netbe:natlab:bridge:natnet",
      "ifconfig natnet inet 10.0.0.1/24 alias",
      "ifconfig natnet up",
      "ifconfig tap create up",
      "ifconfig tap2 description netbe:natlab:tap:tap2",
      "ifconfig natnet addm tap2",
      "sysctl net.inet.ip.forwarding=1",
      "write " .. FILES .. "/pf.conf",
      "pfctl -a netbe/natlab -f " .. FILES .. "/pf.conf",
      "pfctl -e",
      "write " .. FILES .. "/dnsmasq-natnet.conf",
      "dnsmasq --conf-file=" .. FILES .. "/dnsmasq-natnet.conf",
    }, commands(steps))
  end)

  it("loads the nat rule into its own anchor only, never the main ruleset", function()
    assert.equal("# netbe: rules of anchor netbe/natlab; written by netbe, do not edit\n"
                 .. "nat on re1 from 10.0.0.0/24 to any -> (re1)\n", find(steps, "pf-conf").write.content)
    assert.same({ { "pfctl", "-a", "netbe/natlab", "-F", "all" } }, find(steps, "pf-anchor").inverse)
    for _, s in ipairs(steps) do
      for _, list in ipairs({ s.run or {}, s.inverse or {} }) do
        for _, argv in ipairs(list) do
          local text = plan.argv_text(argv)
          assert.is_nil(text:find("/etc/pf.conf", 1, true), text)
          if argv[1] == "pfctl" and (text:find(" -f ") or text:find(" -F ")) then
            assert.equal("-a", argv[2], text)
            assert.matches("^netbe/", argv[3])
          end
        end
      end
    end
  end)

  it("refuses first, printing the anchor lines, when the main ruleset does not evaluate them", function()
    local check = steps[1]
    assert.equal("pf-anchors", check.id)
    assert.is_nil(check.run)
    assert.same({ { argv = { "pfctl", "-sn" }, plain = 'nat-anchor "netbe/*"' },
                  { argv = { "pfctl", "-sr" }, plain = 'anchor "netbe/*"' } }, check.probe)
    local lines = '\nnat-anchor "netbe/*"\nanchor "netbe/*"'
    assert.equal(lines, check.refuse:sub(-#lines))
    assert.matches("never edits /etc/pf.conf", check.refuse, 1, true)
  end)

  it("counts 'pf already enabled' as success and never disables pf", function()
    local s = find(steps, "pf-enable")
    assert.equal("already enabled", s.ok_output)
    assert.same({}, s.inverse)
    assert.same({ { argv = { "pfctl", "-s", "info" }, plain = "Status: Enabled" } }, s.probe)
    -- No command of any example's plan (run, undo, stop, rename) disables pf.
    for _, name in ipairs({ "nat", "bridged", "lab", "netgraph" }) do
      for _, step in ipairs(assert(render.render(load_example(name), FILES))) do
        local lists = { step.run or {}, step.inverse or {}, step.stop or {},
                        step.rename and step.rename.argv or {} }
        for _, list in ipairs(lists) do
          for _, argv in ipairs(list) do
            if argv[1] == "pfctl" then
              for _, a in ipairs(argv) do assert.is_nil(a:match("^%-[a-zA-Z]*d"), plan.argv_text(argv)) end
            end
          end
        end
      end
    end
  end)

  it("leaves IPv4 forwarding to the last topology that needs it, restoring the value it found", function()
    local s = find(steps, "forwarding")
    assert.same({ name = "net.inet.ip.forwarding", value = "1",
                  get = { "sysctl", "-n", "net.inet.ip.forwarding" }, set = { "sysctl" } }, s.shared)
    assert.same({}, s.inverse)
  end)

  it("serves DHCP on the bridge from dnsmasq's own conf, pid and lease files", function()
    local conf = find(steps, "dnsmasq-conf:natnet").write.content
    for _, line in ipairs({ "interface=natnet", "bind-interfaces", "port=0",
                            "dhcp-range=10.0.0.100,10.0.0.199,255.255.255.0,1h",
                            "dhcp-option=option:router,10.0.0.1",
                            "dhcp-leasefile=" .. FILES .. "/dnsmasq-natnet.leases",
                            "pid-file=" .. FILES .. "/dnsmasq-natnet.pid" }) do
      assert.matches("\n" .. line:gsub("%p", "%%%0") .. "\n", conf)
    end
    local d = find(steps, "dnsmasq:natnet")
    assert.same({ { argv = { "pgrep", "-F", FILES .. "/dnsmasq-natnet.pid", "-x", "dnsmasq" } } }, d.probe)
    assert.same({ "pkill", "-F", FILES .. "/dnsmasq-natnet.pid", "-x", "dnsmasq" }, d.inverse[1])
  end)

  it("gives the VM its tap and MAC", function()
    assert.equal("-s 5:0,virtio-net,tap2,mac=58:9c:fc:00:00:02", bhyve.arg(t.vms.app.nics[1]))
  end)
end)
