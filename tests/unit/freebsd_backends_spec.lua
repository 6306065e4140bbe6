-- The FreeBSD-only backends (netgraph, netmap, vale) on a non-FreeBSD host:
-- every config form bhyve and netmap document, valid and invalid, the
-- normalized output of `netbe check`, and the error from opening them.
-- The FreeBSD code paths that open ng_socket nodes and netmap ports are not
-- run here: there is no FreeBSD machine, and nothing in the tree fakes one.
local netbe = require "netbe"
local ns = require "ns"

local on_freebsd = select(2, ns.sh("uname -s")):match("^%S+") == "FreeBSD"

local function accepts(spec)
  local cfg, keys = netbe.check(spec)
  assert(cfg, (type(spec) == "string" and spec or "table spec") .. " was rejected: " .. tostring(keys))
  return cfg, keys
end

local function rejects(spec, pattern)
  local cfg, msg = netbe.check(spec)
  assert.is_nil(cfg, tostring(spec) .. " was accepted")
  assert.matches(pattern, msg)
  return msg
end

-- Runs scripts/netbe with ARGS; returns exit status, stdout, stderr.
local function netbe_cmd(...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = ns.quote(a) end
  local errfile = os.tmpname()
  local p = io.popen(ns.netbe .. " " .. table.concat(args, " ") .. " 2>" .. errfile)
  local out = p:read("a")
  local _, _, status = p:close()
  local f = io.open(errfile)
  local err = f:read("a")
  f:close()
  os.remove(errfile)
  return status, out, err
end

describe("netgraph config", function()
  it("bhyve's form: path and peerhook, hook defaults to vmlink", function()
    local cfg, keys = accepts("netgraph,path=bnet0:,peerhook=link2")
    assert.same({ backend = "netgraph", path = "bnet0:", peerhook = "link2",
                  hook = "vmlink", type = "netgraph" }, cfg)
    assert.same({ "backend", "path", "peerhook", "hook", "type" }, keys)
  end)

  it("takes socket, hook, mac and mtu", function()
    local cfg = accepts("netgraph,path=bnet0:,peerhook=link2,socket=vm1,hook=vm1link," ..
                        "mac=00:A0:98:12:34:56,mtu=9000")
    assert.equal("vm1", cfg.socket)
    assert.equal("vm1link", cfg.hook)
    assert.equal("00:a0:98:12:34:56", cfg.mac)
    assert.equal("9000", cfg.mtu)
  end)

  it("takes node IDs, paths through hooks, and the longest names", function()
    assert.equal("[1f]:", accepts("netgraph,path=[1f]:,peerhook=link0").path)
    assert.equal("em0:lower", accepts("netgraph,path=em0:lower,peerhook=link0").path)
    local n31 = string.rep("n", 31)
    local cfg = accepts("netgraph,path=" .. n31 .. ":,peerhook=" .. n31 .. ",hook=" .. n31 ..
                        ",socket=" .. n31)
    assert.equal(n31 .. ":", cfg.path)
  end)

  it("an empty socket= leaves the node unnamed, as NgMkSockNode does", function()
    assert.equal("", accepts("netgraph,path=bnet0:,peerhook=link2,socket=").socket)
  end)

  it("is chosen by type= too, and from a table", function()
    local cfg = accepts("vm0net,type=netgraph,path=bnet0:,peerhook=link3")
    assert.equal("netgraph", cfg.type)
    assert.equal("vm0net", cfg.backend)
    cfg = accepts({ "netgraph", path = "bnet0:", peerhook = "link4" })
    assert.equal("vmlink", cfg.hook)
  end)

  it("requires path and peerhook, naming the missing key", function()
    rejects("netgraph", "netgraph: path=ADDRESS is required")
    rejects("netgraph,peerhook=link2", "netgraph: path=ADDRESS is required")
    rejects("netgraph,path=bnet0:", "netgraph: peerhook=HOOK is required")
    rejects("netgraph,path=bnet0:,hook=vmlink", "netgraph: peerhook=HOOK is required")
  end)

  it("wants an absolute path", function()
    local expected = "expected an absolute netgraph address"
    rejects("netgraph,path=bnet0,peerhook=link2", "path 'bnet0': " .. expected)
    rejects("netgraph,path=:,peerhook=link2", "path ':': " .. expected)
    rejects("netgraph,path=,peerhook=link2", "path '': " .. expected)
    rejects("netgraph,path=a.b:,peerhook=link2", "path 'a.b:': " .. expected)
    rejects("netgraph,path=" .. string.rep("n", 32) .. ":,peerhook=link2", expected)
    rejects("netgraph,path=bnet0:" .. string.rep("h", 506) .. ",peerhook=link2",
            "netgraph: path of 512 characters: expected at most 511")
    accepts("netgraph,path=bnet0:" .. string.rep("h", 505) .. ",peerhook=link2")
  end)

  it("checks hook and peerhook names", function()
    local expected = "expected a hook name of 1 to 31 characters without '.' or ':'"
    rejects("netgraph,path=bnet0:,peerhook=link2,hook=", "netgraph: hook '': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=link2,hook=a.b", "hook 'a.b': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=li:nk", "peerhook 'li:nk': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=", "peerhook '': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=" .. string.rep("h", 32), expected)
  end)

  it("checks the socket node name", function()
    local expected = "expected a node name of 1 to 31 characters without '.' or ':', not in the %[ID%] form"
    rejects("netgraph,path=bnet0:,peerhook=link2,socket=vm:1", "socket 'vm:1': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=link2,socket=vm.1", "socket 'vm.1': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=link2,socket=[12]", "socket '%[12%]': " .. expected)
    rejects("netgraph,path=bnet0:,peerhook=link2,socket=" .. string.rep("s", 32), expected)
  end)

  it("rejects unknown keys and lists the accepted ones", function()
    rejects("netgraph,path=bnet0:,peerhook=link2,peer=link3",
            "netgraph: unknown key 'peer' %(accepted keys: backend, type, mac, mtu, path, " ..
            "peerhook, hook, socket%)")
  end)

  it("runs the common MAC and MTU checks", function()
    rejects("netgraph,path=bnet0:,peerhook=link2,mac=01:00:5e:00:00:01", "multicast")
    rejects("netgraph,path=bnet0:,peerhook=link2,mtu=70000", "mtu '70000'")
  end)
end)

describe("netmap and vale config", function()
  it("selects netmap for netmap:IF and vale for valeSWITCH:PORT", function()
    local cfg, keys = accepts("netmap:em0")
    assert.same({ backend = "netmap:em0", type = "netmap" }, cfg)
    assert.same({ "backend", "type" }, keys)
    assert.same({ backend = "vale0:1", type = "vale" }, (accepts("vale0:1")))
    assert.same({ backend = "valeA:vm1", type = "vale" }, (accepts("valeA:vm1")))
    assert.equal("vale", accepts("vale_sw1:Port_2").type)
  end)

  it("takes mac and mtu", function()
    local cfg = accepts("vale0:1,mac=02:00:00:00:00:01,mtu=1500")
    assert.equal("02:00:00:00:00:01", cfg.mac)
    assert.equal("1500", cfg.mtu)
  end)

  it("takes nm_open's suffixes", function()
    for _, name in ipairs({ "netmap:em0-0", "netmap:ix0-4094", "netmap:em0^", "netmap:em0*",
                            "netmap:em0{3", "netmap:em0}3", "netmap:em0/x", "netmap:em0@2",
                            "netmap:em0-1/x@2", "netmap:em0@2/x", "netmap:em0/x@2/x",
                            "vale0:1{1", "vale0:1@65535" }) do
      accepts(name)
    end
  end)

  it("takes the longest names that fit nmreq's nr_name", function()
    accepts("netmap:" .. string.rep("i", 15))
    accepts("vale" .. string.rep("s", 5) .. ":" .. string.rep("p", 5))
  end)

  it("rejects bad vale switch and port names (vale(4): valeSSS:PPP, [0-9a-zA-Z_]+)", function()
    rejects("vale:1", "vale:1: bad netmap port name %(expected a switch name of letters, " ..
            "digits and '_' between 'vale' and ':'%)")
    rejects("vale-a:1", "switch name of letters")
    rejects("vale0", "vale0: bad netmap port name %(expected valeSWITCH:PORT, with a ':'")
    rejects("vale0:", "vale0:: bad netmap port name %(expected a port name of letters, " ..
            "digits and '_' after ':'%)")
    rejects("vale0:a.b", "port name of letters")
    rejects("vale0:a:b", "port name of letters")
    rejects("valeria", "expected valeSWITCH:PORT")
  end)

  it("rejects names nmreq cannot hold", function()
    local expected = "expected a port name of at most 15 characters, not counting 'netmap:' or suffixes"
    rejects("netmap:" .. string.rep("i", 16), expected)
    rejects("vale" .. string.rep("s", 6) .. ":" .. string.rep("p", 5), expected)
  end)

  it("rejects bad netmap names", function()
    rejects("netmap:", "netmap:: bad netmap port name %(expected an interface name after 'netmap:'%)")
    rejects("netmap:-1", "an interface name after 'netmap:'")
    rejects("netmap0", "netmap0: expected a netmap port: netmap:IFNAME or valeSWITCH:PORT")
    rejects("em0,type=netmap", "em0: expected a netmap port")
    rejects("tap0,type=vale", "tap0: expected a netmap port")
  end)

  it("rejects bad suffixes, naming what was expected", function()
    local ring = "a ring or pipe number from 0 to 4094 after '%-', '{' or '}'"
    rejects("netmap:em0-", ring)
    rejects("netmap:em0-4095", ring)
    rejects("netmap:em0-x", ring)
    rejects("netmap:em0{", ring)
    local flags = "flags after '/': only x %(exclusive%) can serve a NIC"
    for _, f in ipairs({ "R", "T", "t", "r", "z", "" }) do rejects("netmap:em0/" .. f, flags) end
    rejects("netmap:em0/xR", flags)
    local memid = "a memory region number from 1 to 65535 after '@'"
    rejects("netmap:em0@0", memid)
    rejects("netmap:em0@65536", memid)
    rejects("netmap:em0@", memid)
    local order = "one of the suffixes %^ %* %-N {N }N /x @N, in that order"
    rejects("netmap:em0@1@2", order)
    rejects("netmap:em0^^", order)
    rejects("netmap:em0^-1", order)
    rejects("netmap:em0/x^", order)
    rejects("netmap:em0/x/x", order)
  end)

  it("rejects unknown keys and lists the accepted ones", function()
    rejects("vale0:1,colour=red", "vale: unknown key 'colour' %(accepted keys: backend, type, mac, mtu%)")
    rejects("netmap:em0,path=x", "netmap: unknown key 'path' %(accepted keys: backend, type, mac, mtu%)")
  end)
end)

describe("netbe check", function()
  it("prints the normalized netgraph config", function()
    local status, out = netbe_cmd("check", "netgraph,path=bnet0:,peerhook=link2,socket=vm1")
    assert.equal(0, status)
    assert.equal("backend=netgraph\npath=bnet0:\npeerhook=link2\nsocket=vm1\nhook=vmlink\n" ..
                 "type=netgraph\ncheck: ok, netgraph backend, 6 keys\n", out)
  end)

  it("prints the normalized vale and netmap configs", function()
    local status, out = netbe_cmd("check", "valeA:vm1,mac=00:BE:FA:76:45:00")
    assert.equal(0, status)
    assert.equal("backend=valeA:vm1\nmac=00:be:fa:76:45:00\ntype=vale\n" ..
                 "check: ok, vale backend, 3 keys\n", out)
    status, out = netbe_cmd("check", "netmap:em0")
    assert.equal(0, status)
    assert.equal("backend=netmap:em0\ntype=netmap\ncheck: ok, netmap backend, 2 keys\n", out)
  end)

  it("fails with status 1 and the reason on stderr", function()
    local status, out, err = netbe_cmd("check", "netgraph,path=bnet0:")
    assert.equal(1, status)
    assert.equal("", out)
    assert.equal("netbe: check: netgraph: peerhook=HOOK is required (the hook of the node " ..
                 "at path, like peerhook=link2)\n", err)
    status, out, err = netbe_cmd("check", "vale0:")
    assert.equal(1, status)
    assert.matches("^netbe: check: vale0:: bad netmap port name", err)
  end)
end)

describe("opening", function()
  local pend = on_freebsd and "these are the non-FreeBSD expectations" or nil

  it("netgraph says it needs FreeBSD", function()
    if pend then return pending(pend) end
    assert.has_error(function() netbe.open("netgraph,path=bnet0:,peerhook=link2") end,
                     "netgraph: the netgraph backend needs FreeBSD")
    assert.has_error(function() netbe.open("vm0net,type=netgraph,path=bnet0:,peerhook=link2") end,
                     "vm0net: the netgraph backend needs FreeBSD")
  end)

  it("netmap and vale say they need FreeBSD", function()
    if pend then return pending(pend) end
    assert.has_error(function() netbe.open("netmap:em0") end,
                     "netmap:em0: the netmap backend needs FreeBSD")
    assert.has_error(function() netbe.open("vale0:1") end, "vale0:1: the vale backend needs FreeBSD")
    assert.has_error(function() netbe.open("valeA:vm1,mtu=9000") end,
                     "valeA:vm1: the vale backend needs FreeBSD")
  end)

  it("checks the config first, on every OS", function()
    assert.has_error(function() netbe.open("netgraph,path=bnet0:") end,
                     "netgraph: peerhook=HOOK is required (the hook of the node at path, like peerhook=link2)")
    assert.has_error(function() netbe.open("vale:1") end,
                     "vale:1: bad netmap port name (expected a switch name of letters, digits " ..
                     "and '_' between 'vale' and ':')")
  end)
end)
