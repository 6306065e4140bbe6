-- vhost.lua: examples/vhost-user-net and QEMU guests attached to it, for
-- busted specs. Builds on ns.lua and guest.lua; everything started here is
-- removed by ns.cleanup().
local ns = require("ns")
local guest = require("guest")
local vhost = {}

vhost.bin = ns.root .. "/examples/vhost-user-net"

-- Processes started here, stopped by vhost.cleanup().
local pids = {}

vhost.kill = ns.kill

-- Stop everything started through this module, then ns.cleanup().
function vhost.cleanup()
  for i = #pids, 1, -1 do
    if ns.alive(pids[i]) then vhost.kill(pids[i]) end
  end
  pids = {}
  ns.cleanup()
end

-- Start CMD in the background in namespace N (or on the host); returns pid, log.
function vhost.spawn(n, cmd)
  local pid, log
  if n then pid, log = n:spawn(cmd) else pid, log = ns.spawn(cmd) end
  pids[#pids + 1] = pid
  return pid, log
end

-- QEMU 7.2 under TCG crashes in vhost_net_start when the virtio-net-pci
-- device uses MSI-X with a vhost-user backend (no irqfd without KVM), so
-- the guest's NIC uses legacy interrupts.
vhost.DEVICE = "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,vectors=0"

-- nil when the tests can run here, else why not.
function vhost.skip_unless_ready()
  local why = guest.skip_unless_ready()
  if why then return why end
  if not ns.sh("test -x " .. ns.quote(vhost.bin)) then return "build examples/vhost-user-net first (make)" end
  return nil
end

-- Start the device on socket SOCK with BACKEND, inside namespace N (or on
-- the host), with FLAGS (--allow-files DIR, ...) if given. Returns pid, log
-- once it listens.
function vhost.device(sock, backend, n, flags)
  local debug = os.getenv("VHOST_USER_NET_DEBUG") and "VHOST_USER_NET_DEBUG=1 " or ""
  local cmd = debug .. "exec " .. ns.quote(vhost.bin) .. " --socket " .. ns.quote(sock) .. " "
    .. (flags and flags .. " " or "") .. ns.quote(backend)
  local pid, log = vhost.spawn(n, cmd)
  local up = ns.wait_for(function()
    local f = io.open(log)
    local s = f and f:read("a") or ""
    if f then f:close() end
    return s:find("listening on", 1, true)
  end, 10)
  assert(up, "vhost-user-net did not start: " .. vhost.log(log))
  return pid, log
end

vhost.log = ns.read

-- A guest on the device at SOCK. OPTS as guest.start; extra arguments are
-- appended after the vhost-user chardev.
function vhost.guest(sock, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.shared_mem = true
  o.netdev = "vhost-user,id=n0,chardev=c0"
  o.device = o.device or vhost.DEVICE
  local extra = {"-chardev", "socket,id=c0,path=" .. sock .. ",reconnect=1"}
  for _, a in ipairs(opts and opts.extra or {}) do extra[#extra + 1] = a end
  o.extra = extra
  local g = guest.start(o)
  pids[#pids + 1] = g.pid
  g.stop = function(self) if self:running() then vhost.kill(self.pid) end end
  return g
end

-- A tap made by the device in namespace N, given ADDR (CIDR) once it exists.
function vhost.tap_addr(n, tap, addr)
  assert(ns.wait_for(function() return (n:exec("ip link show " .. tap)) end, 10),
    "tap " .. tap .. " did not appear")
  local ok, out = n:exec("ip addr add " .. addr .. " dev " .. tap .. " && ip link set " .. tap .. " up")
  assert(ok, out)
end

-- Count occurrences of Lua pattern PAT in S.
function vhost.count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

return vhost
