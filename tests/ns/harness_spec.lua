-- The namespace harness itself: what it makes, it removes.
local ns = require("ns")

local skip = ns.skip_unless_root()

describe("the test harness #ns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("removes namespaces, links, processes and directories at cleanup", function()
    local n = ns.new("hx")
    local dir = ns.tmpdir()
    local link = ns.unique("veth")
    assert(ns.sh("ip link add " .. link .. " type veth peer name " .. link .. "p"))
    ns.own_link(link)
    local inner = n:spawn("sleep 600")
    local outer = ns.spawn("sleep 600")
    assert.is_true(ns.alive(inner) and ns.alive(outer))
    ns.cleanup()
    assert.is_false(ns.alive(inner))
    assert.is_false(ns.alive(outer))
    assert.is_false((ns.sh("ip netns list | grep -qw " .. n.name)))
    assert.is_false((ns.sh("ip link show " .. link)))
    assert.is_false((ns.sh("test -e " .. dir)))
  end)

  it("makes names that are unique and fit an interface name", function()
    local seen = {}
    for _ = 1, 200 do
      local name = ns.unique("tapveryverylongprefix")
      assert.is_true(#name <= 15, name)
      assert.is_nil(seen[name])
      seen[name] = true
    end
  end)
end)
