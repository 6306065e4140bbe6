-- netbe.slirp4netns: `netbe slirp4netns [OPTION]... PID|PATH TAPNAME`, a
-- stand-in for slirp4netns 1.2 built on netbe's slirp. It makes TAPNAME
-- inside the target network namespace (the tap backend's netns=), and
-- runs a wire between that tap and a slirp backend until SIGINT, SIGTERM
-- or the exit descriptor. Only the options below exist; a security
-- option it would not honour (--enable-sandbox, --enable-seccomp) is
-- refused, never ignored, since tools read --help to learn what exists.
local cmdline = require("netbe.cmdline")

local s4 = {}
local fail = cmdline.fail

s4.HELP = [==[
Usage: netbe slirp4netns [OPTION]... PID|PATH TAPNAME
User-mode networking for network namespaces, by netbe's slirp backend.
Takes these options of slirp4netns 1.2, and only these:

-c, --configure          bring up the interface: address 10.0.2.100/24 (see
                         --cidr), gateway and default route 10.0.2.2, DNS 10.0.2.3
-e, --exit-fd=FD         exit when FD becomes readable or its writer closes it
-r, --ready-fd=FD        write "1" to FD and close it once the network is ready
-m, --mtu=MTU            MTU (default=1500, max=65521)
--cidr=CIDR              guest network (default=10.0.2.0/24, prefix 1 to 25)
--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host
                         through the gateway address
-a, --api-socket=PATH    API socket: add_hostfwd, list_hostfwd, remove_hostfwd
--netns-type=TYPE        the target is a PID ("pid", default) or a network
                         namespace file ("path")
--userns-path=PATH       join this user namespace to enter the network namespace
-h, --help               show this help and exit
-v, --version            show version and exit
]==]

-- Long name -> { short letter, takes a value }.
local OPTIONS = {
  configure = { "c" }, ["exit-fd"] = { "e", true }, ["ready-fd"] = { "r", true },
  mtu = { "m", true }, cidr = { nil, true }, ["disable-host-loopback"] = {},
  ["api-socket"] = { "a", true }, ["netns-type"] = { nil, true },
  ["userns-path"] = { nil, true }, help = { "h" }, version = { "v" },
}
local SHORT = {}
for long, o in pairs(OPTIONS) do if o[1] then SHORT[o[1]] = long end end

-- slirp4netns 1.2 options netbe does not implement, and why saying so
-- matters: a caller that asked for one must not run without it.
local REFUSED = {
  ["enable-sandbox"] = "netbe does not sandbox itself (no pivot_root, no dropped capabilities)",
  ["enable-seccomp"] = "netbe installs no seccomp filter",
}

-- Splits ARGS as getopt_long does (--name=value, --name value, -e3, -e 3,
-- -ce 3, "--" ends options) -> positional arguments, options | nil, error.
function s4.parse(args)
  local pos, opt = {}, {}
  local i = 1
  local function value(long, inline)
    if inline and inline ~= "" then return inline end
    i = i + 1
    if args[i] == nil then error("option --" .. long .. " needs a value", 0) end
    return args[i]
  end
  local ok, err = pcall(function()
    while i <= #args do
      local a = args[i]
      if a == "--" then
        table.move(args, i + 1, #args, #pos + 1, pos)
        break
      end
      local long, inline = a:match("^%-%-([^=]+)=?(.*)$")
      if long then
        if REFUSED[long] then
          error(string.format("--%s is not supported: %s, so it refuses to run rather "
                              .. "than run without it", long, REFUSED[long]), 0)
        end
        local o = OPTIONS[long]
        if not o then error("unknown option --" .. long, 0) end
        if o[2] then
          opt[long] = value(long, a:find("=", 1, true) and inline or nil)
        elseif a:find("=", 1, true) then
          error("option --" .. long .. " takes no value", 0)
        else
          opt[long] = true
        end
      elseif a:match("^%-.") then
        local j = 2
        while j <= #a do
          local c = a:sub(j, j)
          local name = SHORT[c]
          if not name then error("unknown option -" .. c, 0) end
          if OPTIONS[name][2] then
            opt[name] = value(name, a:sub(j + 1))
            break
          end
          opt[name] = true
          j = j + 1
        end
      else
        pos[#pos + 1] = a
      end
      i = i + 1
    end
  end)
  if not ok then return nil, err end
  return pos, opt
end

-- A whole number in [LO, HI] from option NAME's value V, or an error.
local function whole(name, v, lo, hi, what)
  local n = math.tointeger(tonumber(v:match("^%d+$") and v or nil))
  if not n or n < lo or n > hi then
    error(string.format("--%s '%s': expected %s", name, v, what), 0)
  end
  return n
end

-- "A.B.C.D/N" -> the network's first address as a number, and N.
local function parse_cidr(v)
  local a, b, c, d, n = v:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/(%d+)$")
  local octets = { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
  local prefix = tonumber(n)
  local addr = 0
  for k = 1, 4 do
    if not octets[k] or octets[k] > 255 then addr = nil; break end
    addr = addr * 256 + octets[k]
  end
  if not addr or not prefix or prefix < 1 or prefix > 25 then
    error(string.format("--cidr '%s': expected an IPv4 network like 10.0.2.0/24 with a "
                        .. "prefix from 1 to 25 (the guest is the network's address + 100)", v), 0)
  end
  local mask = (0xffffffff << (32 - prefix)) & 0xffffffff
  return addr & mask, prefix
end

local function ip4(n)
  return string.format("%d.%d.%d.%d", n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
end

-- What the arguments ask for, checked -> a plan table, or an error.
function s4.settings(pos, opt)
  if #pos ~= 2 then
    error(string.format("expected PID|PATH TAPNAME, got %d arguments", #pos), 0)
  end
  local st = { tap = pos[2], configure = opt.configure == true, api_socket = opt["api-socket"],
               host_loopback = not opt["disable-host-loopback"] }
  if #st.tap > 15 or not st.tap:match("^[%w_.-]+$") then
    error(string.format("TAPNAME '%s': expected an interface name of at most 15 letters, "
                        .. "digits, '_', '.' or '-'", st.tap), 0)
  end
  st.mtu = opt.mtu and whole("mtu", opt.mtu, 68, 65521, "a whole number from 68 to 65521")
           or 1500
  local net, prefix = parse_cidr(opt.cidr or "10.0.2.0/24")
  st.cidr = ip4(net) .. "/" .. prefix
  st.prefix, st.guest, st.gateway, st.dns = prefix, ip4(net + 100), ip4(net + 2), ip4(net + 3)
  for _, name in ipairs({ "exit-fd", "ready-fd" }) do
    if opt[name] then
      st[name] = whole(name, opt[name], 3, 2 ^ 31 - 1, "an inherited descriptor above 2")
    end
  end
  local ty = opt["netns-type"] or "pid"
  if ty == "pid" then
    local pid = pos[1]:match("^%d+$") and math.tointeger(tonumber(pos[1]))
    if not pid or pid < 1 then
      error(string.format("PID '%s': expected a process id (or --netns-type=path)", pos[1]), 0)
    end
    st.netns = "/proc/" .. pid .. "/ns/net"
    st.userns = opt["userns-path"] or ("/proc/" .. pid .. "/ns/user")
  elseif ty == "path" then
    st.netns, st.userns = pos[1], opt["userns-path"]
  else
    error(string.format("--netns-type '%s': expected pid or path", ty), 0)
  end
  return st
end

-- True when files A and B are the same (a namespace we are already in).
local function same_file(a, b)
  local ok, out = require("netbe.plan").runner()({ "stat", "-L", "-c", "%d:%i", a, b })
  local x, y = out:match("^(%S+)\n(%S+)")
  return ok and x ~= nil and x == y
end

-- --configure: the address and the default route, set inside the
-- namespace (the tap backend already brought the link up with the MTU).
local function configure(st)
  local enter = { "nsenter", "--net=" .. st.netns }
  if st.userns and not same_file(st.userns, "/proc/self/ns/user") then
    enter[#enter + 1] = "--user=" .. st.userns
    enter[#enter + 1] = "--preserve-credentials"
  end
  local run = require("netbe.plan").runner(enter)
  local steps = {
    { "ip", "addr", "add", st.guest .. "/" .. st.prefix, "dev", st.tap },
    { "ip", "route", "add", "default", "via", st.gateway, "dev", st.tap },
  }
  for _, step in ipairs(steps) do
    local ok, out = run(step)
    if not ok then
      error(string.format("--configure: %s: %s", table.concat(step, " "), (out:gsub("%s+$", ""))), 0)
    end
  end
end

-- libslirp lets the guest reach the host's loopback through the gateway
-- address; --disable-host-loopback drops the guest's TCP and UDP to it.
local function loopback_rules(st)
  local rules = {}
  for _, proto in ipairs({ "tcp", "udp" }) do
    rules[#rules + 1] = { name = "host-loopback-" .. proto, dir = "from_guest",
                          ethertype = "ipv4", dst_ip = st.gateway, proto = proto,
                          action = "drop" }
  end
  return { default = "pass", rules = rules }
end

-- The tap's spec: TAPNAME inside the target namespace. The namespace
-- comes from this command line, not from a config file, so the tap may
-- name any path (permissions "/"); the slirp side gets no host paths.
local function tap_spec(st)
  return st.tap .. ",type=tap,netns=" .. st.netns .. (st.userns and ",userns=" .. st.userns or "")
    .. (st.configure and ",mtu=" .. st.mtu or "")
end

-- Open the NIC (slirp <-> tap), configure it, give it its policy and
-- the API socket -> set, nic, listener (or true), or raises why.
local function start(st)
  local netbe = require("netbe")
  if st["exit-fd"] then netbe.fd_readable(st["exit-fd"]) end
  if st["ready-fd"] then netbe.fd_readable(st["ready-fd"]) end
  local set = require("netbe.serve").new({})
  -- A forward without a guest address goes to libslirp's first DHCP
  -- address; slirp4netns sends it to the configured guest (+100).
  local nic, e = set:add("slirp4netns", string.format("slirp,open,ipv6=off,net=%s,dhcpstart=%s,"
                                                      .. "mtu=%d", st.cidr, st.guest, st.mtu),
                         tap_spec(st), { perm_b = { allow_files = "/" } })
  if not nic then error(e, 0) end
  local ok, err = pcall(function()
    if st.configure then configure(st) end
    if not st.host_loopback then
      local p, perr = require("netbe.policy").compile(loopback_rules(st))
      if not p then error(perr, 0) end
      nic.wire:set_policy(p)
    end
    if st.api_socket then
      local l, lerr = require("netbe.control").listen(set, st.api_socket)
      if not l then error("--api-socket: " .. lerr, 0) end
      return l
    end
    return true
  end)
  if not ok then set:close(); error(err, 0) end
  return set, nic, err
end

function s4.main(args)
  local pos, opt = s4.parse(args)
  if not pos then return fail(2, "slirp4netns: %s (netbe slirp4netns --help lists the options)", opt) end
  if opt.help then io.write(s4.HELP); return 0 end
  if opt.version then
    print("netbe slirp4netns, slirp4netns 1.2 options; netbe " .. require("netbe").VERSION)
    return 0
  end
  local ok, st = pcall(s4.settings, pos, opt)
  if not ok then return fail(2, "slirp4netns: %s", st) end
  local netbe = require("netbe")
  local started, set, nic, listener = pcall(start, st)
  if not started then return fail(1, "slirp4netns: %s", set) end
  print(string.format("slirp4netns: %s in %s, %s via %s, MTU %d%s%s", st.tap, st.netns,
                      st.configure and st.guest .. "/" .. st.prefix or "unconfigured",
                      st.gateway, st.mtu, st.host_loopback and "" or ", no host loopback",
                      st.api_socket and ", API socket " .. st.api_socket or ""))
  io.stdout:flush()
  if st["ready-fd"] then netbe.fd_signal(st["ready-fd"], "1") end
  local exit_fd = st["exit-fd"]
  local reason = set:run{
    on_down = function(_, why) return why end,
    tick = exit_fd and function()
      if netbe.fd_readable(exit_fd) then
        print("slirp4netns: exit-fd " .. exit_fd .. " is readable or closed, exiting")
        return "done"
      end
    end,
  }
  print("slirp4netns: stopped by " .. reason)
  print(require("netbe.cli").format_nic(require("netbe.serve").stats(nic)))
  if listener ~= true then listener:close() end
  set:close()
  if not (reason:match("^SIG") or reason == "done") then
    return fail(1, "slirp4netns: %s", reason)
  end
  return 0
end

return s4
