-- The slirp backend's options and its run-time forwarding API, through the
-- Lua module. Nothing here lets a guest out: configs are only checked, and
-- the one backend opened is restricted with UNIX-socket forwarding only.
local netbe = require "netbe"
local ns = require "ns"
local tmpdir = ns.tmpdir
-- Every permission: host paths anywhere, host commands.
local ALL = { allow_exec = true, allow_files = "/" }

describe("slirp config", function()
  it("writes hostfwd rules in normal form", function()
    local cfg = assert(netbe.check("slirp,hostfwd=tcp::2222-:22;udp:127.0.0.1:5353-10.0.2.20:53;" ..
                                   "unix:/run/vm0-ssh.sock-:22", ALL))
    assert.equal("tcp:0.0.0.0:2222-10.0.2.15:22;udp:127.0.0.1:5353-10.0.2.20:53;" ..
                 "unix:/run/vm0-ssh.sock-10.0.2.15:22", cfg.hostfwd)
    assert.equal("slirp", cfg.type)
  end)

  it("fills an empty guest address from dhcpstart=, and an IPv6 one from mac=", function()
    local cfg = assert(netbe.check("slirp,net=192.168.5.0/24,dhcpstart=192.168.5.9,hostfwd=::80-:8080"))
    assert.equal("tcp:0.0.0.0:80-192.168.5.9:8080", cfg.hostfwd)
    cfg = assert(netbe.check("slirp,mac=52:54:00:12:34:56,ipv6-net=fd00:1::/64," ..
                             "hostfwd=tcp:[::1]:2222-:22"))
    assert.equal("tcp:[::1]:2222-[fd00:1::5054:ff:fe12:3456]:22", cfg.hostfwd)
  end)

  it("accepts the whole bhyve and QEMU option set", function()
    assert.truthy(netbe.check("slirp,open,mtu=65520,net=10.9.0.0/255.255.0.0,host=10.9.0.1," ..
      "dhcpstart=10.9.0.100,dns=10.9.0.53,dnssearch=a.example;b.example,domainname=vm.example," ..
      "hostname=vm0,ipv6=on,ipv6-net=fd00:9::/64,ipv6-host=fd00:9::1,ipv6-dns=fd00:9::53," ..
      "tftp=/srv/tftp,tftp-server-name=boot,bootfile=pxelinux.0," ..
      "guestfwd=tcp:10.9.0.200:4321-cmd:cat", ALL))
    assert.truthy(netbe.check("slirp,restrict=off,ipv6=off"))
    assert.truthy(netbe.check({"slirp", open = true, hostfwd = "tcp::1-:2"}))
  end)

  -- Each bad option, and a piece of the message that must name it.
  local bad = {
    {"slirp,mtu=67", "mtu '67': expected a whole number from 68 to 65521"},
    {"slirp,hostfwd=", "hostfwd='': expected one or more rules"},
    {"slirp,hostfwd=tcp::2222", "hostfwd 'tcp::2222': expected PROTO:HADDR:HPORT%-GADDR:GPORT"},
    {"slirp,hostfwd=tcp::0-:22", "hostfwd 'tcp::0%-:22'"},
    {"slirp,hostfwd=tcp::22-:0", "hostfwd 'tcp::22%-:0'"},
    {"slirp,hostfwd=tcp:1.2.3:22-:22", "hostfwd 'tcp:1.2.3:22%-:22'"},
    {"slirp,hostfwd=icmp::1-:2", "protocol 'icmp' %(expected tcp, udp, unix or empty%)"},
    {"slirp,hostfwd=unix:relative-:22", "expected an absolute UNIX socket path"},
    {"slirp,hostfwd=udp:[::1]:53-:53", "needs an IPv6 guest address"},
    {"slirp,hostfwd=tcp::1-[fd00::1]:2", "of one IP version"},
    {"slirp,open=perhaps", "open='perhaps': expected on or off"},
    {"slirp,restrict=maybe", "restrict='maybe': expected on or off"},
    {"slirp,open,restrict=on", "'open' and 'restrict=on' contradict"},
    {"slirp,net=10.0.2.0/33", "net='10.0.2.0/33': expected an IPv4 network"},
    {"slirp,net=10.0.2.0/255.0.255.0", "net='10.0.2.0/255.0.255.0'"},
    {"slirp,net=banana", "net='banana'"},
    {"slirp,host=10.0.2.0", "host=10.0.2.0: expected a host address inside net=10.0.2.0/24"},
    {"slirp,dns=10.0.2.255", "dns=10.0.2.255: expected a host address inside"},
    {"slirp,dhcpstart=10.0.2.2", "dhcpstart is the host's or the DNS server's address"},
    {"slirp,ipv6=yes please", "ipv6='yes please': expected on or off"},
    {"slirp,ipv6-net=fd00::/0", "ipv6%-net='fd00::/0'"},
    {"slirp,ipv6-dns=fd00::3", "ipv6%-dns=fd00::3: expected an address inside ipv6%-net=fec0::/64"},
    {"slirp,ipv6-host=nothing", "ipv6%-host='nothing': expected an IPv6 address"},
    {"slirp,dnssearch=ex_ample.com", "'ex_ample.com' is not a domain name"},
    {"slirp,guestfwd=udp:10.0.2.100:53-cmd:x", "guestfwd='udp:10.0.2.100:53%-cmd:x'"},
    {"slirp,guestfwd=tcp:10.0.2.2:80-cmd:x", "the address is the host's or the DNS server's"},
    {"slirp,guestfwd=tcp:10.0.3.100:80-cmd:x", "guestfwd=10.0.3.100: expected a host address inside"},
    {"slirp,hostname=", "hostname='': expected 1 to 255 characters"},
    {"slirp,tcp=yes", "unknown key 'tcp'"},
  }
  for _, case in ipairs(bad) do
    it("rejects " .. case[1], function()
      local cfg, msg = netbe.check(case[1])
      assert.is_nil(cfg)
      assert.matches(case[2], msg)
      local ok, err = pcall(netbe.open, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err)
    end)
  end
end)

describe("slirp run-time forwarding", function()
  teardown(ns.cleanup)
  it("adds, lists and removes rules on an open backend", function()
    local dir = tmpdir()
    local be = netbe.open("slirp,hostfwd=unix:" .. dir .. "/a.sock-:22", { allow_files = dir })
    assert.same({"unix:" .. dir .. "/a.sock-10.0.2.15:22"}, be:hostfwd_list())
    assert.is_true(be:hostfwd_add("unix:" .. dir .. "/b.sock-10.0.2.16:80"))
    assert.same({"unix:" .. dir .. "/a.sock-10.0.2.15:22", "unix:" .. dir .. "/b.sock-10.0.2.16:80"},
                be:hostfwd_list())
    assert.is_true(os.rename(dir .. "/b.sock", dir .. "/b.sock"), "the socket exists")
    assert.is_true(be:hostfwd_remove("unix:" .. dir .. "/b.sock"))
    assert.is_nil(io.open(dir .. "/b.sock"), "removing a rule removes its socket")
    assert.is_true(be:hostfwd_remove("unix:" .. dir .. "/a.sock-:22"))
    assert.same({}, be:hostfwd_list())
    be:close()
  end)

  it("refuses bad, duplicate and unknown rules with a message", function()
    local dir = tmpdir()
    local be = netbe.open("slirp", { allow_files = dir })
    local ok, msg = be:hostfwd_add("tcp:nowhere:22-:22")
    assert.is_nil(ok)
    assert.matches("hostfwd 'tcp:nowhere:22%-:22': expected PROTO:HADDR", msg)
    ok, msg = be:hostfwd_add("udp:unix:" .. dir .. "/u.sock-:53")
    assert.is_nil(ok)
    assert.is_true(be:hostfwd_add("unix:" .. dir .. "/c.sock-:22"))
    ok, msg = be:hostfwd_add("unix:" .. dir .. "/c.sock-:23")
    assert.is_nil(ok)
    assert.matches("already forwarded by 'unix:" .. dir:gsub("%p", "%%%0") .. "/c.sock%-10.0.2.15:22'", msg)
    ok, msg = be:hostfwd_remove("unix:" .. dir .. "/none.sock")
    assert.is_nil(ok)
    assert.matches("no forwarding from that host address and port", msg)
    be:close()
    assert.is_nil(io.open(dir .. "/c.sock"), "closing removes the socket")
  end)

  it("is refused on other backends", function()
    local be = netbe.open("null")
    local ok, msg = be:hostfwd_add("tcp::2222-:22")
    assert.is_nil(ok)
    assert.matches("'null' is not a slirp backend", msg)
    assert.is_nil(be:hostfwd_list())
    be:close()
  end)
end)

-- A lone IPv4 fragment from the guest (a datagram that never completes)
-- is held, and dropped once it is 30 s old, with no other frame to prompt
-- it. The clock runs ten times fast under faketime.
local FRAG_TIMEOUT = [[
package.cpath = "lua/?.so;" .. package.cpath
local netbe = require "netbe"
local b = netbe.open("slirp")
local ip = {0x45, 0, 0, 20 + 56, 0x12, 0x34, 0x20, 0x01, 64, 1, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2}
local sum = 0
for i = 1, 20, 2 do sum = sum + (ip[i] << 8 | ip[i + 1]) end
while sum > 0xffff do sum = (sum & 0xffff) + (sum >> 16) end
ip[11], ip[12] = (~sum >> 8) & 0xff, ~sum & 0xff
assert(b:send(string.rep("\255", 6) .. "\82\84\0\18\52\86\8\0" .. string.char(table.unpack(ip)) ..
              string.rep("x", 56)))
local function show()
  local s = b:stats()
  print(("held=%d timeout=%d drops=%d"):format(s.tx_frags - s.tx_frag_drops, s.tx_frag_timeout,
                                             s.tx_drops))
end
netbe.run{timeout = 25}
show()
netbe.run{timeout = 10}
show()
]]

describe("slirp fragments", function()
  teardown(ns.cleanup)
  local has_faketime = ns.sh("command -v faketime")
  it("drops a datagram still incomplete after 30 s, counted", function()
    if not has_faketime then pending("needs faketime") return end
    local script = ns.write(tmpdir() .. "/frag.lua", FRAG_TIMEOUT)
    local ok, out = ns.sh("faketime -f '+0 x10' lua5.4 " .. script)
    assert.is_true(ok, out)
    assert.equal("held=1 timeout=0 drops=0\nheld=0 timeout=1 drops=1\n", out)
  end)
end)
