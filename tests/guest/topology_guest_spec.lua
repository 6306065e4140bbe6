-- A real guest on a NAT topology: QEMU in the topology's namespace opens
-- the VM's tap that `netbe apply` made, the guest gets its address from
-- netbe's dnsmasq and fetches a page from a service namespace through
-- netbe's masquerade. Nothing leaves the machine: the "outside" is a veth
-- into a namespace made here.
local ns = require("ns")
local guest = require("guest")

local reason = guest.skip_unless_ready() or ns.skip_unless_root("nft", "dnsmasq", "busybox")

describe("topology with a real guest", function()
  local t, state, file
  teardown(function()
    if file then
      ns.sh("NETBE_STATE_DIR=" .. ns.quote(state) .. " " .. ns.netbe .. " destroy " .. ns.quote(file)
            .. " --os linux --netns " .. t.name)
    end
    ns.cleanup()
  end)
  if reason then pending(reason) return end

  it("leases an address from netbe's dnsmasq and reaches a service through its NAT", function()
    t = ns.new("topo")
    local s = ns.new("svc")
    local dir = ns.tmpdir()
    state = dir .. "/state"
    file = dir .. "/nat.lua"
    local f = assert(io.open(file, "w"))
    f:write([[
name = "guestnat"
switches = {
  nat0 = { type = "nat", address = "10.0.9.1/24", outbound = "up0",
           dhcp = { range = { "10.0.9.50", "10.0.9.60" } } },
}
vms = { vm = { nics = { { switch = "nat0", ifname = "vmtap", mac = "52:54:00:09:00:02" } } } }
]])
    f:close()
    assert(ns.sh("ip -n " .. t.name .. " link add up0 type veth peer name svc0 netns " .. s.name
                 .. " && ip -n " .. t.name .. " addr add 192.168.79.2/24 dev up0 && ip -n " .. t.name
                 .. " link set up0 up && ip -n " .. s.name .. " addr add 192.168.79.1/24 dev svc0"
                 .. " && ip -n " .. s.name .. " link set svc0 up"))
    local www = ns.tmpdir()
    f = assert(io.open(www .. "/index.html", "w"))
    f:write("served across netbe's NAT\n")
    f:close()
    s:spawn("exec busybox httpd -f -p 192.168.79.1:8080 -h " .. www)

    local ok, out = ns.sh("NETBE_STATE_DIR=" .. ns.quote(state) .. " " .. ns.netbe .. " apply "
                          .. ns.quote(file) .. " --os linux --netns " .. t.name)
    assert.is_true(ok, out)

    local h = guest.start{
      ns = t, mac = "52:54:00:09:00:02",
      netdev = "tap,id=n0,ifname=vmtap,script=no,downscript=no",
      script = "dhcp && wget -q -O - http://192.168.79.1:8080/",
    }
    local status = h:wait_exit(120)
    local console = h:output()
    assert.equal(0, status, h:transcript())
    assert.matches("LEASE ip=10%.0%.9%.5%d router=10%.0%.9%.1", console)
    assert.matches("served across netbe's NAT", console, 1, true)
    local _, leases = ns.sh("cat " .. state .. "/guestnat/dnsmasq-nat0.leases")
    assert.matches("52:54:00:09:00:02 10.0.9.5", leases, 1, true)

    ok, out = ns.sh("NETBE_STATE_DIR=" .. ns.quote(state) .. " " .. ns.netbe .. " destroy "
                    .. ns.quote(file) .. " --os linux --netns " .. t.name)
    assert.is_true(ok, out)
    file = nil
    assert.is_false((ns.sh("ip -n " .. t.name .. " link show vmtap")))
  end)
end)
