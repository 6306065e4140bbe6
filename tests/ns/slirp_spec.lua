-- The slirp backend with real kernel stacks: a guest namespace holds a tap
-- that `netbe wire` joins to slirp, which runs in a host namespace that has
-- only a loopback (no route off the machine). Services the guest reaches
-- "on the host" listen on that namespace's loopback.
local ns = require("ns")
local sl = require("slirpns")

local spawn, setup, wired, dhcp, listening = sl.spawn, sl.setup, sl.wired, sl.dhcp, sl.listening

local skip = ns.skip_unless_root("busybox", "socat")

-- Send "ping" to a UDP port and print the answer (socat's UDP client gives
-- up before slirp's answer comes back).
local UDP_ASK = [[python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())']]

-- A UDP service on ADDR PORT that answers each datagram with its length
-- and SHA-256, and a client that sends one of LEN bytes and prints the
-- answer, then the SHA-256 of what it sent.
local UDP_SUM = [[python3 -c 'import socket, sys, hashlib
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(65536); s.sendto(b"%d %s" % (len(d), hashlib.sha256(d).hexdigest().encode()), a)']]
local UDP_SEND = [[python3 -c 'import socket, sys, hashlib
d = bytes(i * 7 % 251 for i in range(int(sys.argv[3])))
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3); s.sendto(d, (sys.argv[1], int(sys.argv[2])))
print(s.recv(200).decode(), hashlib.sha256(d).hexdigest())']]

local function write(path, text, mode)
  ns.write(path, text)
  if mode then ns.sh("chmod " .. mode .. " " .. ns.quote(path)) end
end

-- A service that answers every TCP connection (socat LISTEN address) or
-- UDP datagram ("UDP:PORT") with TEXT. It must listen: a test that expects
-- no answer would pass on a service that never started.
local function serve(n, listen, text)
  local cmd = "socat " .. listen .. ",reuseaddr,fork SYSTEM:'echo " .. text .. "'"
  if listen:match("^UDP:") then
    cmd = "python3 -c 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" ..
          "s.bind((\"\", " .. listen:match("%d+") .. "))\nwhile True:\n" ..
          "    a = s.recvfrom(100)[1]; s.sendto(b\"" .. text .. "\", a)'"
  end
  local pid = spawn(n, cmd)
  assert(listening(n, listen:match(":(%d+)"), listen:match("^UDP") and "u" or "t"),
         "nothing listens on " .. listen)
  return pid
end

-- Wait until file COPY holds what file ORIGINAL holds.
local function copied(original, copy)
  return ns.wait_for(function()
    local _, a = ns.sh("md5sum <" .. original)
    local _, b = ns.sh("md5sum <" .. copy)
    return a:match("^%x+") == b:match("^%x+")
  end, 10)
end

-- Send 4 MiB over TCP from the guest to LISTEN (a socat address in the host
-- namespace, port PORT) through CONNECT (one in the guest's), and check it
-- arrived intact.
local function send_to_host(env, listen, connect, port)
  local dir = ns.tmpdir()
  spawn(env.h, "exec socat -u " .. listen .. ",reuseaddr OPEN:" .. dir .. "/got,creat,trunc")
  assert.is_true(listening(env.h, port))
  assert(ns.sh("head -c 4194304 /dev/urandom >" .. dir .. "/blob"))
  local ok, out = env.g:exec("timeout 20 socat -u OPEN:" .. dir .. "/blob " .. connect)
  assert.is_true(ok, out)
  assert.is_true(copied(dir .. "/blob", dir .. "/got"), "the 4 MiB arrived damaged or short")
end

-- Give the guest's tap the MAC the specs name, so its address is known.
local function set_guest_mac(env)
  env.g:exec("ip link set " .. env.tap .. " down; ip link set " .. env.tap ..
             " address 52:54:00:12:34:56 up")
end

-- Wait until the guest holds that MAC's EUI-64 address in the /64 PREFIX
-- (like "fd00:77:"), past duplicate address detection.
local function has_eui64(env, prefix)
  return ns.wait_for(function()
    local _, out = env.g:exec("ip -6 addr show dev " .. env.tap .. " scope global")
    return out:match(prefix .. ":5054:ff:fe12:3456") and not out:match("tentative")
  end, 15)
end

-- A tap and slirp joined by tests/helpers/slirp_ctl.lua (MODE "offload"
-- pumps TSO frames itself); returns the setup and ctl(command) -> answer.
local function controlled(spec, mode)
  local dir = ns.tmpdir()
  local helper = ns.root .. "/tests/helpers/slirp_ctl.lua"
  local env = setup(function(tap)
    return "cd " .. ns.quote(ns.root) .. " && exec lua5.4 " .. helper .. " " .. tap .. " " ..
           ns.quote(spec) .. " " .. dir .. " " .. (mode or "")
  end)
  local function ctl(cmd)
    os.remove(dir .. "/out")
    write(dir .. "/cmd.tmp", cmd .. "\n")
    os.rename(dir .. "/cmd.tmp", dir .. "/cmd")
    assert.is_true(ns.wait_for("test -e " .. dir .. "/out", 5), "no answer to " .. cmd)
    return (ns.read(dir .. "/out"):gsub("\n$", ""))
  end
  return env, ctl
end

describe("slirp backend in namespaces", function()
  after_each(sl.stop_started)
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  local lease_cases = {
    {"gives the guest its DHCP lease with the router and DNS the options name",
     "slirp,open,host=10.0.2.4,dns=10.0.2.53", {ip = "10.0.2.15", router = "10.0.2.4", dns = "10.0.2.53"}},
    {"respects a custom net= and dhcpstart=", "slirp,open,net=192.168.76.0/24,dhcpstart=192.168.76.50",
     {ip = "192.168.76.50", router = "192.168.76.2", dns = "192.168.76.3"}},
  }
  for _, case in ipairs(lease_cases) do
    it(case[1], function()
      local lease, out = dhcp(wired(case[2]))
      assert.is_not_nil(lease, out)
      assert.same(case[3], lease)
    end)
  end

  it("lets the guest reach a host loopback service when open", function()
    local env = wired("slirp,open")
    serve(env.h, "TCP4-LISTEN:7001,bind=127.0.0.1", "hello-from-host")
    assert.is_not_nil(dhcp(env))
    local ok, out = env.g:exec("busybox nc -w 3 10.0.2.2 7001 </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-from%-host", out)
  end)

  it("refuses guest connections to the host when restricted", function()
    for _, spec in ipairs({"slirp", "slirp,restrict=on"}) do
      local env = wired(spec)
      serve(env.h, "TCP4-LISTEN:7002,bind=127.0.0.1", "hello-from-host")
      -- libslirp leaves router and DNS out of a restricted lease.
      assert.same({ip = "10.0.2.15", router = "", dns = ""}, dhcp(env))
      env.g:exec("ip route add default via 10.0.2.2")
      local _, out = env.g:exec("timeout 4 busybox nc -w 2 10.0.2.2 7002 </dev/null")
      assert.not_matches("hello%-from%-host", out, spec)
    end
  end)

  it("forwards TCP and UDP into the guest, two rules at once", function()
    -- open: a restricted libslirp drops every UDP datagram from the guest
    -- but DHCP and TFTP, answers to forwarded ones included.
    local env = wired("slirp,open,hostfwd=tcp:127.0.0.1:2222-:22;udp:127.0.0.1:5353-:53")
    assert.is_not_nil(dhcp(env))
    serve(env.g, "TCP4-LISTEN:22", "hello-from-guest")
    serve(env.g, "UDP:53", "udp-pong")
    local ok, out = env.h:exec("socat -T 3 - TCP4:127.0.0.1:2222 </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-from%-guest", out)
    ok, out = env.h:exec(UDP_ASK .. " 127.0.0.1 5353")
    assert.is_true(ok, out)
    assert.matches("udp%-pong", out)
  end)

  it("forwards from the host's ::1 to the guest's EUI-64 address, and from a UNIX socket", function()
    local dir = ns.tmpdir()
    local env = wired("slirp,mac=52:54:00:12:34:56,ipv6-net=fd00:77::/64," ..
                      "hostfwd=tcp:[::1]:2223-:22;unix:" .. dir .. "/fwd.sock-:22", "--allow-files " .. dir)
    set_guest_mac(env)
    assert.is_not_nil(dhcp(env))
    serve(env.g, "TCP6-LISTEN:22,ipv6only=0", "hello-from-guest")
    assert.is_true(has_eui64(env, "fd00:77:"), "the guest has no EUI-64 address in fd00:77::/64")
    local ok, out = env.h:exec("socat -T 3 - TCP6:[::1]:2223 </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-from%-guest", out)
    ok, out = env.h:exec("socat -T 3 - UNIX-CONNECT:" .. dir .. "/fwd.sock </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-from%-guest", out)
  end)

  it("adds, lists and removes forwarding rules at run time", function()
    local env, ctl = controlled("slirp")
    assert.is_not_nil(dhcp(env))
    serve(env.g, "TCP4-LISTEN:22", "hello-from-guest")
    local fetch = "socat -T 3 - TCP4:127.0.0.1:2224 </dev/null"
    assert.not_matches("hello%-from%-guest", select(2, env.h:exec(fetch)))
    assert.equal("ok", ctl("add tcp:127.0.0.1:2224-:22"))
    assert.equal("tcp:127.0.0.1:2224-10.0.2.15:22", ctl("list"))
    assert.matches("hello%-from%-guest", select(2, env.h:exec(fetch)))
    assert.matches("already forwarded", ctl("add tcp:127.0.0.1:2224-:23"))
    assert.matches("expected PROTO:HADDR", ctl("add tcp:127.0.0.1"))
    assert.equal("ok", ctl("remove tcp:127.0.0.1:2224"))
    assert.equal("", ctl("list"))
    assert.not_matches("hello%-from%-guest", select(2, env.h:exec(fetch)))
    assert.matches("no forwarding", ctl("remove tcp:127.0.0.1:2224"))
  end)

  it("takes the guest's TSO frames whole, checksums completed, data intact", function()
    local env, ctl = controlled("slirp,open", "offload")
    assert.is_not_nil(dhcp(env))
    send_to_host(env, "TCP4-LISTEN:7004,bind=127.0.0.1", "TCP4:10.0.2.2:7004", 7004)
    local biggest = tonumber(ctl("maxframe"))
    assert.is_true(biggest > 10 + 1514, "no frame beyond the MTU: " .. biggest)
  end)

  -- libslirp 4.7 answers an IPv6 packet larger than its MTU with "packet
  -- too big" and drops it, so the guest's IPv6 TSO frames are cut first.
  it("carries the guest's IPv6 TCP to the host intact with offloads on", function()
    local env = wired("slirp,open,mac=52:54:00:12:34:56,ipv6-net=fd00:7a::/64")
    set_guest_mac(env)
    assert.is_true(has_eui64(env, "fd00:7a:"), "the guest has no EUI-64 address in fd00:7a::/64")
    send_to_host(env, "TCP6-LISTEN:7011,bind=[::1]", "TCP6:[fd00:7a::2]:7011", 7011)
  end)

  -- libslirp sends a window of MSS-sized segments at a time; netbe joins
  -- them into TSO frames for a tap that negotiated TSO, and never else.
  local join_cases = {
    { v6 = false, flags = "", joined = true },
    { v6 = false, flags = "--no-offload", joined = false },
    { v6 = true, flags = "", joined = true },
  }
  for _, case in ipairs(join_cases) do
    it("sends host->guest data intact over IPv" .. (case.v6 and "6" or "4") .. ", " ..
       (case.joined and "joined into TSO frames" or "in MTU-sized frames with --no-offload"), function()
      local spec = case.v6 and "slirp,open,mac=52:54:00:12:34:56,ipv6-net=fd00:78::/64," ..
                               "hostfwd=tcp:[::1]:7005-:7005"
                           or "slirp,open,hostfwd=tcp:127.0.0.1:7005-:7005"
      local env = wired(spec, "--stats 1 " .. case.flags)
      if case.v6 then
        set_guest_mac(env)
      end
      assert.is_not_nil(dhcp(env))
      if case.v6 then
        assert.is_true(has_eui64(env, "fd00:78:"), "the guest has no EUI-64 address in fd00:78::/64")
      end
      local dir = ns.tmpdir()
      spawn(env.g, "exec socat -u TCP6-LISTEN:7005,ipv6only=0,reuseaddr OPEN:" .. dir ..
                   "/got,creat,trunc")
      assert.is_true(listening(env.g, 7005))
      assert(ns.sh("head -c 4194304 /dev/urandom >" .. dir .. "/blob"))
      local ok, out = env.h:exec("socat -u OPEN:" .. dir .. "/blob " ..
                                 (case.v6 and "TCP6:[::1]:7005" or "TCP4:127.0.0.1:7005"))
      assert.is_true(ok, out)
      assert.is_true(copied(dir .. "/blob", dir .. "/got"), "the 4 MiB arrived damaged or short")
      -- The slirp side's counters once they show the whole transfer.
      local frames, bytes
      assert.is_true(ns.wait_for(function()
        for line in ns.read(env.log):gmatch("[^\n]+") do
          if not line:match("^" .. env.tap .. "%s") then
            local f, b = line:match("^%S+%s+rx_frames=(%d+) rx_bytes=(%d+)")
            if f then frames, bytes = tonumber(f), tonumber(b) end
          end
        end
        return bytes and bytes >= 4194304
      end, 5), "no counters for the slirp side in " .. ns.read(env.log))
      local average = bytes / frames
      if case.joined then
        assert.is_true(average > 4000, "frames to the guest average " .. average .. " bytes")
      else
        assert.is_true(average <= 1514 + 12, "frames to the guest average " .. average .. " bytes")
      end
    end)
  end

  it("serves TFTP, names the boot file, domain and search list in the lease, and runs guestfwd", function()
    local dir = ns.tmpdir()
    write(dir .. "/hello.txt", "hello-over-tftp\n")
    write(dir .. "/lease.sh", "#!/bin/sh\n[ \"$1\" = bound ] && echo \"EXTRA domain=$domain " ..
          "search=$search boot=$boot_file host=$hostname tftp=$tftp\"\n" ..
          "[ \"$1\" = bound ] && ip addr add \"$ip/24\" dev \"$interface\"\nexit 0\n", "755")
    local env = wired("slirp,hostname=vm0,domainname=example.test,dnssearch=a.test;b.test," ..
                      "tftp=" .. dir .. ",tftp-server-name=tftp.example.test,bootfile=hello.txt," ..
                      "guestfwd=tcp:10.0.2.100:5555-cmd:echo hello-from-guestfwd",
                      "--allow-exec --allow-files " .. dir)
    local ok, out = env.g:exec("busybox udhcpc -f -q -n -t 5 -T 1 -O search -O tftp -i " .. env.tap ..
                               " -s " .. dir .. "/lease.sh")
    assert.is_true(ok, out)
    assert.matches("EXTRA domain=example%.test search=a%.test b%.test boot=hello%.txt host=vm0 " ..
                   "tftp=tftp%.example%.test", out)
    ok, out = env.g:exec("cd " .. dir .. " && busybox tftp -g -r hello.txt -l got.txt 10.0.2.2")
    assert.is_true(ok, out)
    assert.equal("hello-over-tftp\n", ns.read(dir .. "/got.txt"))
    ok, out = env.g:exec("busybox nc -w 3 10.0.2.100 5555 </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-from%-guestfwd", out)
  end)

  it("gives the guest an IPv6 address in the prefix and reaches the host's ::1", function()
    local env = wired("slirp,open,ipv6-net=fd00:76::/64")
    serve(env.h, "TCP6-LISTEN:7003,bind=[::1]", "hello-over-v6")
    local addr
    assert.is_true(ns.wait_for(function()
      local _, out = env.g:exec("ip -6 addr show dev " .. env.tap .. " scope global")
      addr = out:match("inet6 (fd00:76:[%x:]+)/64")
      return addr and not out:match("tentative")
    end, 15), "no IPv6 address from the router advertisement")
    local ok, out = env.g:exec("busybox nc -w 3 fd00:76::2 7003 </dev/null")
    assert.is_true(ok, out)
    assert.matches("hello%-over%-v6", out)
  end)

  -- The guest's kernel cuts a 4000-byte UDP datagram into fragments at MTU
  -- 1500; libslirp must get it whole (netbe reassembles: libslirp 4.7
  -- would crash on IPv4 fragments out of order and drops IPv6 ones). For
  -- IPv6 slirp's mtu= is larger than the guest's link, or libslirp would
  -- refuse the reassembled datagram.
  local frag_cases = {
    { v6 = false, spec = "slirp,open", to = "10.0.2.2", listen = "127.0.0.1" },
    { v6 = true, spec = "slirp,open,mtu=9000,mac=52:54:00:12:34:56,ipv6-net=fd00:79::/64",
      to = "fd00:79::2", listen = "::1" },
  }
  for _, case in ipairs(frag_cases) do
    it("carries a fragmented 4000-byte UDP datagram from the guest whole to a host listener over IPv" ..
       (case.v6 and "6" or "4"), function()
      local env = wired(case.spec, "--stats 1")
      if case.v6 then set_guest_mac(env) end
      assert.is_not_nil(dhcp(env))
      if case.v6 then
        assert.is_true(has_eui64(env, "fd00:79:"), "the guest has no EUI-64 address in fd00:79::/64")
      end
      spawn(env.h, UDP_SUM .. " " .. case.listen .. " 7010")
      assert.is_true(listening(env.h, 7010, "u"), "the UDP listener did not start")
      local ok, out = env.g:exec(UDP_SEND .. " " .. case.to .. " 7010 4000")
      assert.is_true(ok, out)
      local n, got, sent = out:match("^(%d+) (%x+) (%x+)")
      assert.equal("4000", n, out)
      assert.equal(sent, got, "the listener got other bytes than the guest sent")
      local whole
      assert.is_true(ns.wait_for(function()
        whole = tonumber(ns.read(env.log):match(".*tx_frags=%d+ tx_frag_whole=(%d+)"))
        return whole and whole >= 1
      end, 3), "no datagram reassembled: " .. ns.read(env.log))
    end)
  end

  it("rejects each bad option with a message naming it", function()
    local bad = {
      {"slirp,hostfwd=tcp::22", "hostfwd 'tcp::22': expected PROTO:HADDR:HPORT%-GADDR:GPORT"},
      {"slirp,hostfwd=sctp::1-:2", "protocol 'sctp' %(expected tcp, udp, unix or empty%)"},
      {"slirp,hostfwd=tcp:[::1]:99999-:22", "hostfwd 'tcp:%[::1%]:99999%-:22'"},
      {"slirp,hostfwd=udp:unix:/x-:2", "hostfwd 'udp:unix:/x%-:2'"},
      {"slirp,net=10.0.2.1/24", "net='10.0.2.1/24': host bits are set"},
      {"slirp,net=10.0.2.0/31", "net='10.0.2.0/31': expected an IPv4 network"},
      {"slirp,host=10.0.3.2", "host=10.0.3.2: expected a host address inside net=10.0.2.0/24"},
      {"slirp,dhcpstart=10.9.9.9", "dhcpstart=10.9.9.9: expected a host address inside"},
      {"slirp,dns=nameserver", "dns='nameserver': expected an IPv4 address"},
      {"slirp,open,restrict=on", "'open' and 'restrict=on' contradict"},
      {"slirp,ipv6=maybe", "ipv6='maybe': expected on or off"},
      {"slirp,ipv6-net=fec0::/200", "ipv6%-net='fec0::/200': expected an IPv6 prefix"},
      {"slirp,ipv6-host=fd00::2", "ipv6%-host=fd00::2: expected an address inside"},
      {"slirp,dnssearch=a b", "dnssearch='a b': 'a b' is not a domain name"},
      {"slirp,guestfwd=tcp:10.0.2.100:80", "guestfwd='tcp:10.0.2.100:80': expected tcp:ADDR:PORT%-cmd:COMMAND"},
      {"slirp,mtu=65530", "mtu '65530': expected a whole number from 68 to 65521"},
      {"slirp,hostfwd=tcp:192.0.2.1:2222-:22", "cannot listen on the host side"},
      {"slirp,colour=blue", "unknown key 'colour'"},
      {"slirp,hostfwd=tcp:[::1]:2223-:22", "needs an IPv6 guest address"},
      {"slirp,hostfwd=tcp:[::1]:2223-10.0.2.15:22", "of one IP version"},
    }
    local h = ns.new("slb")
    for _, case in ipairs(bad) do
      local ok, out = h:exec(ns.netbe .. " wire null " .. ns.quote(case[1]))
      assert.is_false(ok, case[1])
      assert.matches(case[2], out, 1, false, case[1])
    end
  end)
end)
