-- Config parsing and checking: bhyve's documented forms, valid and invalid.
local netbe = require "netbe"

local function check(spec)
  local cfg, keys = netbe.check(spec)
  return cfg, keys
end

local function rejects(spec, pattern)
  local cfg, msg = netbe.check(spec)
  assert.is_nil(cfg, spec .. " was accepted")
  assert.matches(pattern, msg)
end

describe("legacy config strings", function()
  it("tap0 selects tap by prefix and keeps the name", function()
    local cfg, keys = check("tap0")
    assert.same({ backend = "tap0", type = "tap" }, cfg)
    assert.same({ "backend", "type" }, keys)
  end)

  it("normalizes the MAC to lower case", function()
    local cfg = check("tap0,mac=00:BE:FA:76:45:00")
    assert.equal("00:be:fa:76:45:00", cfg.mac)
  end)

  it("vmnet0,mtu=9000 selects vmnet", function()
    local cfg = check("vmnet0,mtu=9000")
    assert.equal("vmnet", cfg.type)
    assert.equal("9000", cfg.mtu)
  end)

  it("type= overrides prefix matching", function()
    local cfg = check("bsdvm0,type=tap")
    assert.equal("tap", cfg.type)
    assert.equal("bsdvm0", cfg.backend)
  end)

  it("ngd0 selects ngd, not netgraph", function()
    assert.equal("ngd", check("ngd0").type)
  end)

  it("a bare key means true", function()
    local cfg = check("pair,name")
    assert.equal("true", cfg.name)
  end)

  it("keeps values containing '=' and ':'", function()
    local cfg = check("stream,connect=[::1]:5555")
    assert.equal("[::1]:5555", cfg.connect)
  end)

  it("also takes a table", function()
    local cfg = check({ "tap3", mtu = 1500, mac = "02:00:00:00:00:01" })
    assert.same({ backend = "tap3", type = "tap", mtu = "1500", mac = "02:00:00:00:00:01" }, cfg)
  end)
end)

describe("bad configs", function()
  it("rejects an unknown key and lists what the backend takes", function()
    rejects("tap0,colour=blue", "unknown key 'colour' %(accepted keys: backend, type, mac, mtu, queues, netns, userns%)")
  end)

  it("lists the backend's own keys too", function()
    rejects("stream,connect=/tmp/x,bogus", "accepted keys: .*listen, connect, reconnect")
  end)

  it("rejects an unknown backend and lists the known ones", function()
    rejects("eth0", "backend 'eth0' matches no backend %(expected .*tap.*stream")
    rejects("foo,type=bogus", "unknown backend type 'bogus'")
  end)

  it("rejects empty fields and keys", function()
    assert.has_error(function() netbe.check("") end, "empty backend config (expected BACKEND[,key[=value]]...)")
    assert.has_error(function() netbe.check("tap0,,mtu=1500") end)
    assert.has_error(function() netbe.check("tap0,=x") end)
  end)

  it("rejects multicast, zero and malformed MACs", function()
    rejects("tap0,mac=01:00:5e:00:00:01", "multicast")
    rejects("tap0,mac=00:00:00:00:00:00", "all%-zero")
    rejects("tap0,mac=00:be:fa:76:45", "expected six hex bytes")
    rejects("tap0,mac=00:be:fa:76:45:00:11", "expected six hex bytes")
    rejects("tap0,mac=zz:be:fa:76:45:00", "expected six hex bytes")
  end)

  it("accepts MTUs 46..65535 only, with no trailing junk", function()
    assert.equal("46", check("tap0,mtu=46").mtu)
    assert.equal("65535", check("tap0,mtu=65535").mtu)
    rejects("tap0,mtu=45", "from 46 to 65535")
    rejects("tap0,mtu=65536", "from 46 to 65535")
    rejects("tap0,mtu=1500x", "mtu '1500x'")
    rejects("tap0,mtu=-1", "mtu '%-1'")
    rejects("tap0,mtu=", "mtu ''")
  end)

  it("checks stream and dgram addresses", function()
    rejects("stream", "exactly one of listen=ADDR or connect=ADDR")
    rejects("stream,listen=:1,connect=/x", "exactly one")
    rejects("stream,connect=1.2.3:80", "not a numeric IPv4 or IPv6 address")
    rejects("stream,connect=127.0.0.1:0", "port '0'")
    rejects("stream,connect=127.0.0.1:99999", "port '99999'")
    rejects("stream,connect=nohost", "expected unix:/path, HOST:PORT")
    rejects("stream,listen=:80,reconnect=5", "with connect= only")
    rejects("stream,connect=/x,reconnect=soon", "reconnect='soon'")
    rejects("dgram,local=127.0.0.1:1", "needs local=ADDR and remote=ADDR")
    rejects("dgram,local=127.0.0.1:1,remote=unix:/x", "different families")
    rejects("stream,connect=unix:" .. string.rep("a", 120), "UNIX socket path")
  end)
end)

describe("MAC and MTU helpers", function()
  it("generates bhyve's MAC: 00:a0:98 + MD5('SLOT-FUNC-VMNAME')[0..2]", function()
    -- Expected values computed independently with Python's hashlib.md5.
    assert.equal("00:a0:98:27:a7:18", netbe.mac_generate(2, 0, "vm1"))
    assert.equal("00:a0:98:37:cb:2e", netbe.mac_generate(5, 0, "freebsd13"))
    assert.equal("00:a0:98:05:d7:7d", netbe.mac_generate(3, 1, string.rep("x", 40)))
  end)

  it("parses MACs and MTUs", function()
    assert.equal("00:be:fa:76:45:00", netbe.parse_mac("00:BE:FA:76:45:00"))
    local ok, msg = netbe.parse_mac("ff:ff:ff:ff:ff:ff")
    assert.is_nil(ok)
    assert.matches("multicast", msg)
    assert.equal(9000, netbe.parse_mtu("9000"))
    assert.is_nil(netbe.parse_mtu("9000 "))
  end)
end)

describe("opening on Linux", function()
  it("vmnet and ngd say they need FreeBSD", function()
    assert.has_error(function() netbe.open("vmnet0") end, "vmnet0: the vmnet backend needs FreeBSD")
    assert.has_error(function() netbe.open("ngd0") end, "ngd0: the ngd backend needs FreeBSD")
  end)

  it("open runs the same checks as check", function()
    assert.has_error(function() netbe.open("tap0,mtu=12") end,
      "mtu '12': expected a whole number from 46 to 65535")
  end)
end)
