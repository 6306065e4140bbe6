-- netbe's stream backend against passt, the other program that speaks
-- QEMU's stream format: passt runs in a namespace whose only route leads
-- to a dead-end namespace, a tap in a guest namespace is wired to passt's
-- socket by `netbe wire`, and the guest uses passt's DHCP and its mapping
-- of the gateway address to the host's loopback.
local ns = require("ns")

local skip = ns.skip_unless_root("passt", "socat", "busybox", "sha256sum")

describe("netbe stream to passt #ns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("leases from passt and moves 4 MiB each way intact", function()
    local host, edge, g = ns.new("ph"), ns.new("pe"), ns.new("pg")
    local tmp = ns.tmpdir()
    assert(ns.sh("chmod 1777 " .. tmp))  -- passt drops to nobody and makes its socket here
    -- passt copies its addresses from a routed interface: give it one that
    -- leads nowhere off this machine.
    local ok, out = ns.sh(table.concat({
      "ip -n " .. host.name .. " link add v0 type veth peer name v1 netns " .. edge.name,
      "ip -n " .. host.name .. " addr add 10.77.0.1/24 dev v0",
      "ip -n " .. host.name .. " link set v0 up",
      "ip -n " .. edge.name .. " addr add 10.77.0.254/24 dev v1",
      "ip -n " .. edge.name .. " link set v1 up",
      "ip -n " .. host.name .. " route add default via 10.77.0.254"}, " && "))
    assert(ok, out)
    local sock = tmp .. "/passt.sock"
    host:spawn("passt -f -s " .. sock)
    assert(ns.wait_for("test -S " .. sock, 10), "passt did not start")
    assert(ns.sh("head -c 4194304 /dev/urandom >" .. tmp .. "/down"))
    host:spawn("socat TCP-LISTEN:8080,bind=127.0.0.1,reuseaddr,fork OPEN:" .. tmp .. "/down")
    host:spawn("socat -u TCP-LISTEN:8081,bind=127.0.0.1,reuseaddr OPEN:" .. tmp .. "/up,creat,trunc")
    local tap = ns.unique("tap")
    g:spawn(ns.netbe .. " wire 'stream,connect=unix:" .. sock .. "' " .. tap .. " --allow-files " .. tmp)
    assert(ns.wait_for(function() return (g:exec("ip link show " .. tap)) end, 10))

    ok, out = g:exec("busybox udhcpc -i " .. tap .. " -q -n -t 5 -s /dev/null")
    assert(ok, "no lease from passt: " .. out)
    assert.matches("lease of 10%.77%.0%.1 obtained", out)
    assert(g:exec("ip addr add 10.77.0.1/24 dev " .. tap .. " && ip route add default via 10.77.0.254"))

    ok, out = g:exec("timeout 60 socat -u TCP:10.77.0.254:8080 OPEN:" .. tmp .. "/got,creat,trunc")
    assert(ok, "download through passt: " .. out)
    assert(g:exec("head -c 4194304 /dev/urandom >" .. tmp .. "/sent"))
    ok, out = g:exec("timeout 60 socat -u OPEN:" .. tmp .. "/sent TCP:10.77.0.254:8081")
    assert(ok, "upload through passt: " .. out)
    ns.wait_for("test $(stat -c %s " .. tmp .. "/up) = 4194304", 20)
    local function sum(f) return select(2, ns.sh("sha256sum <" .. tmp .. "/" .. f)) end
    assert.equal(sum("down"), sum("got"))
    assert.equal(sum("sent"), sum("up"))
  end)
end)
