-- tap_spec.lua: the tap backend's own steps on Linux, in a namespace this
-- spec makes. A bare "tap" takes the name the kernel chose (the shared step
-- FreeBSD's clone device takes through TAPGIFNAME), and its link is up.
local ns = require("ns")

local skip = ns.skip_unless_root("ip")

describe("tap backend #ns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("a bare tap takes the kernel's name, and its link is up", function()
    local h = ns.new("h")
    local pid, log = h:spawn(ns.netbe .. " wire tap null")
    local name
    assert.is_true(ns.wait_for(function()
      name = ns.read(log):match("wire: (%S+) %(tap%)")
      return name ~= nil
    end, 10), "netbe wire never ran: " .. ns.read(log))
    assert.are_not.equal("tap", name)
    local ok, out = h:exec("ip -o link show " .. name)
    assert(ok, out)
    assert.matches("[<,]UP[,>]", out)
    ns.kill(pid, "INT")
  end)
end)
