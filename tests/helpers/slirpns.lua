-- slirpns.lua: a tap joined to slirp in namespaces, for the specs that
-- run the slirp backend with real kernel stacks. The process that runs
-- slirp lives in a host namespace with only a loopback (no route off the
-- machine); the tap it makes moves to a guest namespace. Services the
-- guest reaches "on the host" listen on the host namespace's loopback.
local ns = require("ns")

local sl = {}

-- udhcpc's script: configure the lease and print it.
local DHCP_SCRIPT = [[#!/bin/sh
case "$1" in
bound|renew)
  ip -4 addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
  echo "LEASE ip=$ip router=$router dns=$dns"
  ;;
esac
]]

-- Processes started through sl.spawn, stopped by sl.stop_started (each
-- spec calls it after each test; ns.cleanup stops them too).
local started = {}

-- Start CMD in namespace N; returns pid, log file.
function sl.spawn(n, cmd)
  local pid, log = n:spawn(cmd)
  started[#started + 1] = pid
  return pid, log
end

function sl.stop_started()
  for _, pid in ipairs(started) do ns.kill(pid) end
  started = {}
end

-- A host namespace running CMD_FOR(tap) and a guest namespace holding the
-- tap, up. Returns {h, g, tap, pid, log}.
function sl.setup(cmd_for)
  local h, g = ns.new("slh"), ns.new("slg")
  local tap = ns.unique("tap")
  local pid, log = sl.spawn(h, cmd_for(tap))
  local up = ns.wait_for("ip -n " .. h.name .. " link show " .. tap .. " >/dev/null 2>&1", 5)
  assert(up, "the tap did not appear; netbe said: " .. ns.read(log))
  assert(ns.sh("ip -n " .. h.name .. " link set " .. tap .. " netns " .. g.name))
  assert(g:exec("ip link set " .. tap .. " up"))
  return {h = h, g = g, tap = tap, pid = pid, log = log}
end

-- `netbe wire [FLAGS] TAP SPEC` in a fresh host namespace.
function sl.wired(spec, flags)
  return sl.setup(function(tap)
    return ns.netbe .. " wire " .. (flags or "") .. " " .. tap .. " " .. ns.quote(spec)
  end)
end

-- Run udhcpc in the guest; returns the LEASE line's fields or nil, output.
function sl.dhcp(env)
  local dir = ns.tmpdir()
  ns.write(dir .. "/dhcp.sh", DHCP_SCRIPT)
  assert(ns.sh("chmod 755 " .. dir .. "/dhcp.sh"))
  local ok, out = env.g:exec("busybox udhcpc -f -q -n -t 5 -T 1 -i " .. env.tap ..
                             " -s " .. dir .. "/dhcp.sh")
  local ip, router, dns = out:match("LEASE ip=(%S+) router=(%S*) dns=(%S*)")
  if not ok or not ip then return nil, out end
  return {ip = ip, router = router, dns = dns}
end

-- Wait until something in namespace N listens on PORT (PROTO "t" for TCP,
-- "u" for UDP).
function sl.listening(n, port, proto)
  return ns.wait_for(function()
    local _, out = n:exec("ss -ln" .. (proto or "t") .. " | grep -q ':" .. port .. " ' && echo yes")
    return out:match("yes")
  end, 5)
end

return sl
