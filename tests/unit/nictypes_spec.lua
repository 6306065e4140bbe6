-- The NIC-type registry: one row per type, and the questions the rest of
-- netbe asks it (the netbe spec, the wire `netbe serve` runs).
local nictypes = require("netbe.nictypes")
local topology = require("netbe.topology")
local netbe = require("netbe")

local function load_text(text)
  local env = {}
  assert(load(text, "=t", "t", env))()
  return assert(topology.check(env, "t.lua", "t"))
end

local ALL = load_text([[
switches = { br = { type = "bridge" }, g = { type = "netgraph", uplink = "re0" } }
vms = { a = { nics = {
  { switch = "br" },
  { switch = "br", type = "veth" },
  { switch = "g", socket = "s0" },
  { switch = "g", type = "ngd", device = "ngd1" },
  { type = "slirp", hostfwd = { "tcp::2222-:22", "unix:/run/a.sock-:80" }, mac = "52:54:00:00:00:01" },
  { type = "stream", connect = "unix:/run/b.sock" },
} } }
]])

describe("NIC-type registry", function()
  it("has one complete row per type, in the order errors list them", function()
    assert.same({ "tap", "veth", "netgraph", "ngd", "slirp", "stream" }, nictypes.ORDER)
    local seen = {}
    for name, row in pairs(nictypes.types) do
      seen[#seen + 1] = name
      assert.equal(name, row.name)
      assert.is_table(row.keys, name)
      assert.is_function(row.check, name)
    end
    table.sort(seen)
    assert.same({ "netgraph", "ngd", "slirp", "stream", "tap", "veth" }, seen)
  end)

  it("gives every NIC a netbe spec that netbe's parser takes, or none", function()
    local want = { tap = "an0,type=tap", veth = nil, netgraph = "netgraph,path=g:,peerhook=link2,socket=s0",
                   ngd = "ngd1", slirp = "slirp,hostfwd=tcp::2222-:22;unix:/run/a.sock-:80,mac=52:54:00:00:00:01",
                   stream = "stream,connect=unix:/run/b.sock" }
    for _, nic in ipairs(ALL.nics) do
      local spec = nictypes.spec(nic)
      assert.equal(want[nic.type], spec, nic.type)
      if spec then assert.is_table(netbe.check(spec, { allow_files = "/" }), spec) end
    end
  end)

  it("answers serve's question: the wire for a userspace NIC, none for a kernel one", function()
    local vm_end = "stream,listen=unix:/run/netbe/a0.sock"
    for _, nic in ipairs(ALL.nics) do
      local a, b = nictypes.wire(nic, vm_end)
      if nic.type == "slirp" or nic.type == "stream" then
        assert.equal(nictypes.spec(nic), a)
        assert.equal(vm_end, b)
      else
        assert.is_nil(a, nic.type)
      end
    end
  end)

  it("makes host steps on both systems for the NICs that are an interface of their own", function()
    for name, row in pairs(nictypes.types) do
      if name == "tap" or name == "veth" then
        assert.is_function(row.steps.linux, name)
        assert.is_function(row.steps.freebsd, name)
      else
        assert.is_nil(row.steps, name)
      end
    end
  end)
end)
