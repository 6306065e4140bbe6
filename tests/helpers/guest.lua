-- guest.lua: a real Linux guest under qemu-system-x86_64 (-accel tcg) for
-- busted specs. The guest is the Debian cloud kernel with a busybox
-- initramfs (scripts/mkguest); each test adds its own /test.sh as a second
-- cpio archive, so nothing is shared between runs. The guest prints
-- READY once eth0 is up, runs the script (with `dhcp` defined), prints
-- NETBE-TEST-EXIT=<status> and powers off.
local ns = require("ns")
-- Console markers, as Lua patterns.
local guest = {READY = "NETBE%-GUEST%-READY", EXIT = "NETBE%-TEST%-EXIT=(%d+)"}

local dir = ns.root .. "/build/guest"
local built

-- Build the image once per process; returns kernel, initramfs or nil, why.
function guest.image()
  if built == nil then
    local ok, out = ns.sh(ns.quote(ns.root .. "/scripts/mkguest"))
    built = ok or out
  end
  if built ~= true then return nil, built end
  return dir .. "/vmlinuz", dir .. "/initramfs.cpio.gz"
end

-- nil when guests can run here, else why not (for pending()).
function guest.skip_unless_ready()
  local why = ns.skip_unless_root("qemu-system-x86_64", "cpio")
  if why then return why end
  local k, err = guest.image()
  if not k then return "cannot build the guest: " .. err end
  return nil
end

local Guest = {}
Guest.__index = Guest

function Guest:output() return ns.read(self.console) end

function Guest:running() return ns.alive(self.pid) end

-- Wait for a Lua pattern on the console; returns the first capture (or the
-- match) or nil on timeout or when QEMU ended first.
function Guest:wait_for(pattern, timeout)
  local found
  ns.wait_for(function()
    local out = self:output()
    found = out:match(pattern)
    return found or not self:running()
  end, timeout or 30)
  if not found then found = self:output():match(pattern) end
  return found
end

-- Wait for the test script's end; returns its exit status or nil.
function Guest:wait_exit(timeout)
  local status = self:wait_for(guest.EXIT, timeout or 60)
  ns.wait_for(function() return not self:running() end, 5)
  return tonumber(status)
end

function Guest:stop()
  if self:running() then ns.kill(self.pid) end
end

-- The tail of the console, for failure messages.
function Guest:transcript(lines)
  local out, t = self:output(), {}
  for l in out:gmatch("[^\n]*") do t[#t + 1] = l end
  return table.concat(t, "\n", math.max(1, #t - (lines or 40)))
end

-- Boot a guest; OPTS: netdev, device, script, mem, shared_mem, extra, ns, timeout.
function guest.start(opts)
  local kernel, initrd = guest.image()
  assert(kernel, "guest image unavailable: " .. tostring(initrd))
  local tmp = ns.tmpdir()
  local f = assert(io.open(tmp .. "/test.sh", "w"))
  f:write(opts.script or "true", "\n")
  f:close()
  local ok, out = ns.sh("cd " .. tmp .. " && echo test.sh | cpio -o -H newc --quiet | gzip -1 >script.cpio && " ..
    "cat " .. ns.quote(initrd) .. " script.cpio >initrd.img")
  assert(ok, "cannot make the guest initrd: " .. out)
  local mem = opts.mem or 256
  local mac = opts.mac or "52:54:00:12:34:56"
  local args = {"qemu-system-x86_64", "-accel", "tcg", "-m", tostring(mem),
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
    "-kernel", kernel, "-initrd", tmp .. "/initrd.img",
    "-append", ns.quote("console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check " .. (opts.append or ""))}
  if opts.shared_mem then
    for _, a in ipairs({"-object", "memory-backend-memfd,id=mem0,size=" .. mem .. "M,share=on",
                        "-machine", "pc,memory-backend=mem0"}) do args[#args + 1] = a end
  end
  if opts.netdev then
    args[#args + 1] = "-netdev"; args[#args + 1] = opts.netdev
    args[#args + 1] = "-device"
    args[#args + 1] = opts.device or ("virtio-net-pci,netdev=n0,mac=" .. mac)
  end
  for _, a in ipairs(opts.extra or {}) do args[#args + 1] = a end
  for i = 2, #args do
    if not args[i]:match("^'") then args[i] = ns.quote(args[i]) end
  end
  local cmd = "exec " .. table.concat(args, " ")
  local pid, log
  if opts.ns then pid, log = opts.ns:spawn(cmd) else pid, log = ns.spawn(cmd) end
  return setmetatable({pid = pid, console = log, mac = mac, tmp = tmp}, Guest)
end

return guest
