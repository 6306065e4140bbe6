-- Bad topology files are rejected with the file, the field and the reason.
local topology = require("netbe.topology")
local ns = require("ns")

local root = os.getenv("PWD")
local netbe_cmd = root .. "/scripts/netbe"

local tmpfiles = {}
local function tmpfile(text)
  local path = ns.write(os.tmpname() .. ".lua", text)
  tmpfiles[#tmpfiles + 1] = path
  return path
end

-- The error for TEXT loaded as a file, without the "FILE: " prefix.
local function err_of(text)
  local path = tmpfile(text)
  local t, err = topology.load(path)
  assert.is_nil(t, "expected an error for:\n" .. text)
  local prefix = path .. ": "
  assert.equal(prefix, err:sub(1, #prefix), "the error names the file")
  return err:sub(#prefix + 1)
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

describe("topology validation", function()
  teardown(function() for _, p in ipairs(tmpfiles) do os.remove(p); os.remove(p:sub(1, -5)) end end)

  it("accepts every example and fills defaults", function()
    for _, name in ipairs({ "netgraph", "bridged", "nat", "lab" }) do
      local t, err = topology.load("examples/topologies/" .. name .. ".lua")
      assert.is_table(t, err)
    end
    local path = tmpfile([[
switches = { n = { type = "nat", address = "10.1.0.1/24", outbound = "eth0", dhcp = true } }
vms = { web = { nics = { { switch = "n" } } } }
]])
    local t = topology.load(path)
    assert.equal(path:match("([^/]+)%.lua$"):lower(), t.name)   -- from the file name
    assert.equal("10.1.0.128", t.switches.n.dhcp.first)
    assert.equal("10.1.0.254", t.switches.n.dhcp.last)
    assert.equal("12h", t.switches.n.dhcp.lease)
    assert.equal("webn0", t.vms.web.nics[1].ifname)
    assert.equal("5:0", t.vms.web.nics[1].slot)
    assert.equal("tap", t.vms.web.nics[1].type)
  end)

  it("rejects names that are not legal interface or netgraph names", function()
    assert.equal([[switches.br-ext: expected a switch name: a letter then letters, digits or '_', at most 15 characters, got "br-ext"]],
                 err_of([[switches = { ["br-ext"] = { type = "bridge" } }]]))
    assert.equal([[switches.averyveryverylongname: expected a switch name: a letter then letters, digits or '_', at most 15 characters, got "averyveryverylongname"]],
                 err_of([[switches = { averyveryverylongname = { type = "bridge" } }]]))
    assert.equal([[switches.b.uplink: expected an interface name (letters, digits, '_', '.', '-'; at most 15 characters), got "re0:"]],
                 err_of([[switches = { b = { type = "bridge", uplink = "re0:" } }]]))
    assert.equal([[vms.a.nics[1].ifname: expected an interface name: a letter then letters, digits or '_', at most 15 characters, got "tap.1"]],
                 err_of([[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", ifname = "tap.1" } } } }]]))
    assert.equal([[vms.a b: expected a VM name: a letter then letters, digits, '_' or '-', at most 31 characters, got "a b"]],
                 err_of([[vms = { ["a b"] = { nics = {} } }]]))
    assert.equal([[name: expected a topology name: a lower-case letter, then lower-case letters, digits or '_', at most 24 characters, got "My Lab"]],
                 err_of([[name = "My Lab"]]))
  end)

  it("rejects bad CIDRs", function()
    local function addr(a) return err_of('switches = { b = { type = "bridge", address = "' .. a .. '" } }') end
    assert.equal([[switches.b.address: expected an IPv4 address with prefix like 10.0.0.1/24, got "10.0.0.1": expected ADDRESS/PREFIX like 10.0.0.1/24]],
                 addr("10.0.0.1"))
    assert.equal([[switches.b.address: expected an IPv4 address with prefix like 10.0.0.1/24, got "10.0.0.256/24": '10.0.0.256' is not an IPv4 address]],
                 addr("10.0.0.256/24"))
    assert.equal([[switches.b.address: expected an IPv4 address with prefix like 10.0.0.1/24, got "10.0.0.1/33": prefix /33 is not in 1..30]],
                 addr("10.0.0.1/33"))
    assert.equal([[switches.b.address: expected an IPv4 address with prefix like 10.0.0.1/24, got "10.0.0.0/24": '10.0.0.0' is the network or broadcast address of /24]],
                 addr("10.0.0.0/24"))
    assert.equal([[switches.b.address: expected an IPv4 address with prefix like 10.0.0.1/24, got "010.0.0.1/24": '010.0.0.1' is not an IPv4 address]],
                 addr("010.0.0.1/24"))
  end)

  it("rejects VLANs outside 1..4094", function()
    local function vlan(v) return err_of('switches = { b = { type = "bridge", uplink = "re0", vlan = ' .. v .. ' } }') end
    assert.equal("switches.b.vlan: expected a VLAN id 1..4094, got 0 (number)", vlan("0"))
    assert.equal("switches.b.vlan: expected a VLAN id 1..4094, got 4095 (number)", vlan("4095"))
    assert.equal([[switches.b.vlan: expected a VLAN id 1..4094, got "10"]], vlan('"10"'))
    assert.equal("switches.b.vlan: expected a VLAN id 1..4094, got 1.5 (number)", vlan("1.5"))
    assert.equal("switches.b.vlan: a VLAN needs an uplink to tag on",
                 err_of('switches = { b = { type = "bridge", vlan = 5 } }'))
    assert.equal("vms.a.nics[1].vlan: expected a VLAN id 1..4094, got 5000 (number)",
                 err_of([[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", vlan = 5000 } } } }]]))
  end)

  it("rejects unknown keys, naming the ones it knows", function()
    assert.equal("topology.switchs: unknown key for a topology (expected one of: name, switches, vms)",
                 err_of([[switchs = {}]]))
    assert.equal("switches.b.uplinks: unknown key for bridge switch (expected one of: address, members, mtu, private, type, uplink, vlan)",
                 err_of([[switches = { b = { type = "bridge", uplinks = "re0" } }]]))
    assert.equal("vms.a.nics[1].bridge: unknown key for NIC (expected one of: connect, device, hostfwd, ifname, link, mac, peer, private, slot, socket, switch, type, vlan)",
                 err_of([[vms = { a = { nics = { { bridge = "b" } } } }]]))
    assert.equal("vms.a.memory: unknown key for a VM (expected one of: nics)",
                 err_of([[vms = { a = { memory = 512 } }]]))
    assert.equal("switches.n.dhcp.start: unknown key for dhcp (expected one of: lease, range)",
                 err_of([[switches = { n = { type = "nat", address = "10.0.0.1/24", outbound = "e0", dhcp = { start = 1 } } }]]))
    assert.equal("vms.a.nics[1].private: not used by a slirp NIC",
                 err_of([[vms = { a = { nics = { { type = "slirp", private = true } } } }]]))
    assert.equal("vms.a.nics[1].vlan: not used by a netgraph NIC",
                 err_of([[switches = { g = { type = "netgraph", uplink = "re0" } }
vms = { a = { nics = { { switch = "g", vlan = 3 } } } }]]))
    assert.equal("vms.a.nics[1].ifname: not used by a netgraph NIC",
                 err_of([[switches = { g = { type = "netgraph", uplink = "re0" } }
vms = { a = { nics = { { switch = "g", ifname = "x" } } } }]]))
  end)

  it("rejects a NIC naming a switch that does not exist", function()
    assert.equal([[vms.a.nics[2].switch: no switch named "lan" in this topology]],
                 err_of([[switches = { wan = { type = "bridge" } }
vms = { a = { nics = { { switch = "wan" }, { switch = "lan" } } } }]]))
  end)

  it("rejects other bad values with the field and the reason", function()
    local cases = {
      { [[switches = { b = { type = "router" } }]],
        [[switches.b.type: expected one of bridge, nat, netgraph, existing, got "router"]] },
      { [[switches = { n = { type = "nat", address = "10.0.0.1/24" } }]],
        "switches.n.outbound: a NAT switch needs the outbound interface" },
      { [[switches = { n = { type = "nat", outbound = "e0" } }]],
        "switches.n.address: a NAT switch needs an address like 10.0.0.1/24" },
      { [[switches = { n = { type = "nat", address = "10.0.0.1/24", outbound = "e0", dhcp = { range = { "10.0.1.5", "10.0.0.9" } } } }]],
        "switches.n.dhcp.range[1]: 10.0.1.5 is outside 10.0.0.0/24" },
      { [[switches = { n = { type = "nat", address = "10.0.0.1/24", outbound = "e0", dhcp = { range = { "10.0.0.50", "10.0.0.9" } } } }]],
        "switches.n.dhcp.range: first address 10.0.0.50 is after last 10.0.0.9" },
      { [[switches = { g = { type = "netgraph" } }]],
        "switches.g.uplink: a netgraph switch needs an uplink interface" },
      { [[switches = { b = { type = "bridge", mtu = 100000 } }]],
        "switches.b.mtu: expected an MTU 576..65535, got 100000 (number)" },
      { [[switches = { b = { type = "bridge", members = "re0" } }]],
        [[switches.b.members: expected a list, got "re0"]] },
      { [[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", mac = "01:00:5e:00:00:01" } } } }]],
        [[vms.a.nics[1].mac: expected a unicast MAC like 52:54:00:12:34:56, got "01:00:5e:00:00:01"]] },
      { [[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", slot = "x" } } } }]],
        [[vms.a.nics[1].slot: expected a PCI slot like 5, 2:0 or 0:2:0, got "x"]] },
      { [[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", type = "netgraph" } } } }]],
        [[vms.a.nics[1].type: a bridge switch takes NIC types tap, veth, got "netgraph"]] },
      { [[vms = { a = { nics = { { type = "slirp", hostfwd = { "2222:22" } } } } }]],
        [[vms.a.nics[1].hostfwd[1]: expected a forward like tcp::2222-:22, got "2222:22": slirp: hostfwd '2222:22': protocol '2222' (expected tcp, udp, unix or empty)]] },
      { [[vms = { a = { nics = { eth0 = { type = "slirp" } } } }]],
        [[vms.a.nics: expected a list of NICs { {...}, {...} }, got a table with keys "eth0"]] },
      { [[vms = { a = { nics = { { type = "vde" } } } }]],
        [[vms.a.nics[1].type: expected tap, veth, netgraph, ngd, slirp or stream, got "vde"]] },
      { [[vms = { a = { nics = { { type = "stream" } } } }]],
        "vms.a.nics[1].connect: expected unix:/PATH, /PATH, HOST:PORT or [IPV6]:PORT, got nil (nil)" },
      { [[switches = { g = { type = "netgraph", uplink = "re0" } }
vms = { a = { nics = { { switch = "g", link = 2 } } }, b = { nics = { { switch = "g", link = 2 } } } }]],
        "vms.b.nics[1].link: link2 of g is already taken" },
      { [[switches = { g = { type = "netgraph", uplink = "re0" } }
vms = { a = { nics = { { switch = "g", link = 1 } } } }]],
        "vms.a.nics[1].link: expected an ng_bridge link number 2..31, got 1 (number)" },
      { [[switches = { b = { type = "bridge" } }
vms = { a = { nics = { { switch = "b", ifname = "b" } } } }]],
        "vms.a.nics[1].ifname: interface b is also made by switches.b" },
      { [[switches = { b = { type = "bridge" } }
vms = { averyveryverylongvm = { nics = { { switch = "b" } } } }]],
        "vms.averyveryverylongvm.nics[1].ifname: expected an interface name (the default VM name + n + index is too long; set ifname): a letter then letters, digits or '_', at most 15 characters, got \"averyveryverylongvmn0\"" },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], err_of(c[1])) end
  end)

  it("takes a stream NIC's address in netbe's forms only, so no key rides along", function()
    local function nic(addr)
      return "vms = { a = { nics = { { type = 'stream', connect = " .. string.format("%q", addr) .. " } } } }"
    end
    for _, addr in ipairs({ "127.0.0.1:5000", "[::1]:5000", "unix:/run/vm.sock", "/run/vm.sock" }) do
      local path = tmpfile(nic(addr))
      local t, err = topology.load(path)
      assert.is_table(t, err)
      local code, out = sh(netbe_cmd .. " bhyve-args " .. path .. " --vm a --netbe")
      assert.equal(0, code, out)
      assert.equal("stream,connect=" .. addr .. "\n", out)
    end
    assert.matches('^vms%.a%.nics%[1%]%.connect: expected unix:/PATH, /PATH, HOST:PORT or %[IPV6%]:PORT, '
                   .. 'got "unix:/x,reconnect=1,mtu=9000": stream: key \'connect\': a \',\' or control character',
                   err_of(nic("unix:/x,reconnect=1,mtu=9000")))
    for _, addr in ipairs({ "127.0.0.1:5000,mtu=9000", "tcp:127.0.0.1:5000", "host.example:22", "",
                            "127.0.0.1:0", "unix:" }) do
      assert.matches("connect: expected unix:/PATH", err_of(nic(addr)))
    end
  end)

  it("takes a slirp NIC's forwards exactly as netbe's parser does", function()
    local netbe = require("netbe")
    local function nic(rule, mac)
      return string.format("vms = { a = { nics = { { type = 'slirp', hostfwd = { %q }%s } } } }", rule,
                           mac and ", mac = '" .. mac .. "'" or "")
    end
    local rules = { "tcp::2222-:22", "::2222-:22", "udp:127.0.0.1:5353-10.0.2.15:53",
                    "unix:/run/vm.sock-:22", "tcp:[::1]:2222-[fec0::15]:22", "tcp:[::1]:2222-:22",
                    "tcp::99999-:22", "sctp::1-:2", "tcp:999.1.1.1:22-:22", "tcp::1-:2,open", "2222:22", "" }
    for _, rule in ipairs(rules) do
      for _, mac in ipairs({ false, "52:54:00:00:00:01" }) do
        local spec = { "slirp", hostfwd = rule, mac = mac or nil }
        local want, why = netbe.check(spec, { allow_files = "/" })
        local t, err = topology.load(tmpfile(nic(rule, mac)))
        if want then
          assert.is_table(t, err)
        else
          assert.is_nil(t, rule .. " passed the topology but not netbe: " .. why)
          assert.matches("hostfwd%[1%]: expected a forward like tcp::2222%-:22, got .*: "
                         .. why:gsub("%p", "%%%0") .. "$", err)
        end
      end
    end
    -- What bhyve-args prints, netbe takes; bhyve's own slirp has no unix:
    -- or IPv6 forwards, so it gets no device for them.
    local path = tmpfile(nic("unix:/run/vm.sock-:22"))
    local code, out = sh(netbe_cmd .. " bhyve-args " .. path .. " --vm a --netbe")
    assert.equal(0, code, out)
    assert.equal("slirp,hostfwd=unix:/run/vm.sock-:22\n", out)
    code, out = sh(netbe_cmd .. " check " .. out:gsub("%s+$", "") .. " --allow-files /")
    assert.equal(0, code, out)
    code, out = sh(netbe_cmd .. " bhyve-args " .. path)
    assert.equal(0, code, out)
    assert.matches("bhyve: none: bhyve's slirp backend takes IPv4 tcp and udp forwards only, "
                   .. "not hostfwd[1] unix:/run/vm.sock-:22", out, 1, true)
  end)

  it("reports Lua errors and missing files with the file and line", function()
    local path = tmpfile("switches = {\n  b = { type = 'bridge' ,, }\n}\n")
    local t, err = topology.load(path)
    assert.is_nil(t)
    assert.matches(path:gsub("%p", "%%%0") .. ":2: ", err)
    path = tmpfile("switches = {}\nerror('no such host')\n")
    t, err = topology.load(path)
    assert.is_nil(t)
    assert.matches(path:gsub("%p", "%%%0") .. ":2: no such host", err)
    -- The file can compute but cannot act.
    path = tmpfile("vms = {}\nfor i = 1, 3 do vms['vm' .. i] = { nics = { { type = 'slirp' } } } end\n")
    t = assert(topology.load(path))
    assert.equal(3, #t.vm_list)
    path = tmpfile("os.execute('true')\n")
    t, err = topology.load(path)
    assert.is_nil(t)
    assert.matches("attempt to index a nil value %(global 'os'%)", err)
    t, err = topology.load("/nonexistent/topo.lua")
    assert.is_nil(t)
    assert.matches("^/nonexistent/topo.lua: cannot read the topology file: ", err)
  end)

  it("keeps every message on one line whatever the file's keys and values hold", function()
    local cases = {
      { "switches = { ['a\\nb'] = { type = 'bridge' } }\n", [[switches.a?b: expected a switch name]] },
      { "switches = { b = { type = 'x\\ny' } }\n", [[switches.b.type: expected one of bridge, nat, netgraph, existing, got "x\ny"]] },
      { "switches = { b = { type = 'bridge', ['k\\r'] = 1 } }\n", [[switches.b.k?: unknown key]] },
      { "vms = { ['v\\n'] = { nics = {} } }\n", [[vms.v?: expected a VM name]] },
      { "error('a\\nb')\n", ":1: a?b" },
    }
    for _, c in ipairs(cases) do
      local t, err = topology.load(tmpfile(c[1]))
      assert.is_nil(t)
      assert.is_nil(err:find("%c"), "a control character in: " .. err)
      assert.truthy(err:find(c[2], 1, true), "expected '" .. c[2] .. "' in: " .. err)
    end
  end)

  it("makes the command exit 1 with the message, and 2 on bad usage", function()
    -- Runs `netbe ARGS`: the exit code must be CODE and the output hold TEXT.
    local function exits(code, text, args, env)
      local got, out = sh((env or "") .. netbe_cmd .. " " .. args)
      assert.equal(code, got, out)
      assert.matches(text, out, 1, true)
    end
    local path = tmpfile([[switches = { b = { type = "bridge", vlan = 9999, uplink = "re0" } }]])
    local code, out = sh(netbe_cmd .. " plan " .. path .. " --os linux")
    assert.equal(1, code)
    assert.equal("netbe: " .. path .. ": switches.b.vlan: expected a VLAN id 1..4094, got 9999 (number)\n", out)
    exits(2, "--os wants freebsd or linux, got 'windows'", "plan " .. path .. " --os windows")
    exits(2, "expected one topology file, got 0", "apply")
    exits(2, "unknown option --bogus", "status examples/topologies/nat.lua --bogus")
    exits(1, "switches.bnet0: netgraph switches exist only on FreeBSD (use --os freebsd)",
          "plan examples/topologies/netgraph.lua --os linux")
    -- A live holder of the topology's lock keeps apply out; a dead one does not.
    local _, dir = sh("mktemp -d /tmp/netbe-lock.XXXXXX")
    dir = dir:gsub("%s+$", "")
    local state = "NETBE_STATE_DIR=" .. dir .. " "
    local apply = "apply examples/topologies/bridged.lua --os linux --dry-run"
    sh("mkdir " .. dir .. "/bridged.lock && echo 1 > " .. dir .. "/bridged.lock/pid")
    exits(1, "apply: topology bridged is busy: netbe process 1 holds " .. dir .. "/bridged.lock", apply, state)
    sh("echo 999999999 > " .. dir .. "/bridged.lock/pid")
    exits(0, "dry run: 6 steps would run", apply, state)
    local _, left = sh("ls -A " .. dir)
    assert.equal("", left)                       -- lock released, nothing recorded
    sh("rm -rf " .. dir)
    exits(1, 'status: --netns nbnosuchns: Cannot open network namespace "nbnosuchns"',
          "status examples/topologies/nat.lua --os linux --netns nbnosuchns")
    exits(2, "apply: --netns is for --os linux", "apply examples/topologies/nat.lua --os freebsd --netns x")
    exits(2, "apply: --os freebsd on a linux host: only plan and bhyve-args work for another system",
          "apply examples/topologies/nat.lua --os freebsd")
    exits(1, "no VM named 'nosuch' in topology natlab", "bhyve-args examples/topologies/nat.lua --vm nosuch")
  end)
end)
