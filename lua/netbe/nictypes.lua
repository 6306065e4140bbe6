-- netbe.nictypes: the NIC types a topology's VMs may have, one row each,
-- as in bhyve's net_backends.c, where a backend is one row of functions.
-- Everything netbe knows about a type is in its row, nictypes.types[NAME]:
--   name      what a NIC's `type =` says
--   switches  the switch types it plugs into (a set); nil: it takes no switch
--   keys      the NIC keys it takes besides switch, type, mac and slot (a set)
--   check     check(n, nic, field): checks the file's table N and fills NIC
--   bhyve     bhyve(nic): the BACKEND of bhyve's "-s SLOT,virtio-net,BACKEND",
--             or nil and why bhyve cannot carry it; nil: bhyve has no backend
--   netbe     netbe(nic): its netbe config string without mac= (what an
--             embedder passes to netbe_open_str); nil: netbe cannot open it
--   userspace true when netbe carries its frames (see nictypes.wire); the
--             kernel carries the others, and the VM opens their interface
--   steps     { linux = f, freebsd = f }: f(topo, nic, add, R) adds the host
--             steps that make the NIC, with R the renderer of that system;
--             nil: the NIC needs none
-- A value written in netbe's syntax (a forward, a socket address) is
-- checked by netbe's own parser (fields.spec_value, netbe.check) with the
-- rest of its spec, never by a pattern here, so the topology cannot refuse
-- what netbe takes or pass what it refuses. The only rules of the topology's
-- own are on names (interfaces it makes, ng_device units, netgraph sockets),
-- and they are narrower than netbe's.
local F = require("netbe.fields")

local nictypes = {}
local types = {}
nictypes.types = types

-- The type names in the order of the rows below: the order errors list
-- them in, and for each switch type the first that plugs into it is its
-- default.
nictypes.ORDER = {}

local function row(entry)
  types[entry.name] = entry
  nictypes.ORDER[#nictypes.ORDER + 1] = entry.name
end

-- The keys every NIC takes, whatever its type.
nictypes.COMMON_KEYS = { switch = true, type = true, mac = true, slot = true }

-- ==== Bridge ports: tap and veth ====
-- An interface netbe makes for the VM and puts on a bridge.

local BRIDGES = { bridge = true, nat = true, existing = true }

local function port_check(n, nic, field)
  nic.private = F.bool(n.private, field .. ".private")
  if n.vlan ~= nil then nic.vlan = F.int(n.vlan, field .. ".vlan", 1, 4094, "a VLAN id") end
  nic.ifname = n.ifname ~= nil and F.name(n.ifname, field .. ".ifname", "an interface name")
    or F.name(nic.vm .. "n" .. nic.index, field .. ".ifname",
              "an interface name (the default VM name + n + index is too long; set ifname)")
end

-- A tap the VM's hypervisor opens: tapN, or any name with type=tap.
local function tap_name(nic) return nic.ifname end

local function tap_spec(nic)
  return nic.ifname:match("^tap") and nic.ifname or nic.ifname .. ",type=tap"
end

local function tap_linux(topo, nic, add, R)
  add(R.create_step(topo, "tap:" .. nic.ifname, "create tap " .. nic.ifname .. " for " .. nic.vm,
                    nic.ifname, { "ip", "tuntap", "add", "dev", nic.ifname, "mode", "tap" }))
  R.port_steps(nic, add)
end

-- The kernel picks the unit; rename when it is not the one asked for.
local function tap_freebsd(topo, nic, add, R)
  add(R.create_step(topo, "tap:" .. nic.ifname, "create tap " .. nic.ifname .. " for " .. nic.vm,
                    nic.ifname, { "ifconfig", "tap", "create", "up" },
                    { to = nic.ifname, argv = { { "ifconfig", "%s", "name", nic.ifname } },
                      cleanup = { "ifconfig", "%s", "destroy" } }))
  R.port_steps(nic, add)
end

row { name = "tap", switches = BRIDGES, keys = { ifname = true, private = true, vlan = true },
      check = port_check, bhyve = tap_name, netbe = tap_spec,
      steps = { linux = tap_linux, freebsd = tap_freebsd } }

-- A veth pair (an epair on FreeBSD): the VM side is PEER, a namespace or
-- jail takes it; no hypervisor opens it.
local function veth_check(n, nic, field)
  port_check(n, nic, field)
  nic.peer = n.peer ~= nil and F.name(n.peer, field .. ".peer", "an interface name")
    or F.name(nic.ifname .. "p", field .. ".peer", "an interface name")
end

local function veth_linux(topo, nic, add, R)
  add(R.create_step(topo, "veth:" .. nic.ifname, "create veth pair " .. nic.ifname .. "/" .. nic.peer
                      .. " for " .. nic.vm, nic.ifname,
                    { "ip", "link", "add", "name", nic.ifname, "type", "veth", "peer", "name", nic.peer }))
  R.port_steps(nic, add)
end

local function veth_freebsd(topo, nic, add, R)
  add(R.create_step(topo, "epair:" .. nic.ifname, "create epair " .. nic.ifname .. "/" .. nic.peer
                      .. " for " .. nic.vm, nic.ifname, { "ifconfig", "epair", "create", "up" },
                    { to = nic.ifname, argv = { { "ifconfig", "%s", "name", nic.ifname },
                                                { "ifconfig", "%p", "name", nic.peer } },
                      cleanup = { "ifconfig", "%s", "destroy" } }))
  R.port_steps(nic, add)
end

row { name = "veth", switches = BRIDGES, keys = { ifname = true, private = true, vlan = true, peer = true },
      check = veth_check, steps = { linux = veth_linux, freebsd = veth_freebsd } }

-- ==== Netgraph: a hook of the switch's ng_bridge ====
-- The link number is fixed by the topology (topology.lua numbers the
-- links), so the NIC needs no host step of its own.

local NETGRAPH = { netgraph = true }

local function link_check(n, nic, field)
  if n.link ~= nil then nic.link = F.int(n.link, field .. ".link", 2, 31, "an ng_bridge link number") end
end

-- bhyve's netgraph backend: a socket node the VM's process makes, hooked
-- to the link.
local function netgraph_check(n, nic, field)
  link_check(n, nic, field)
  if n.socket ~= nil then nic.socket = F.name(n.socket, field .. ".socket", "a netgraph socket name") end
end

local function netgraph_spec(nic)
  local s = "netgraph,path=" .. nic.switch.name .. ":,peerhook=link"
    .. (nic.switch.autolink and "" or tostring(nic.link))
  if nic.socket then s = s .. ",socket=" .. nic.socket end
  return s
end

row { name = "netgraph", switches = NETGRAPH, keys = { link = true, socket = true },
      check = netgraph_check, bhyve = netgraph_spec, netbe = netgraph_spec }

-- An ng_device node (/dev/ngdN) on a link of the bridge.
local function ngd_check(n, nic, field)
  if not (type(n.device) == "string" and n.device:match("^ngd%d+$")) then
    F.bad(field .. ".device", "expected the ng_device unit like ngd0, got %s", F.describe(n.device))
  end
  nic.device = n.device
  link_check(n, nic, field)
end

local function ngd_device(nic) return nic.device end

row { name = "ngd", switches = NETGRAPH, keys = { device = true, link = true },
      check = ngd_check, bhyve = ngd_device, netbe = ngd_device }

-- ==== Userspace NICs: no switch, no host steps ====

-- libslirp's user-mode NAT, in the process that opens it.
local function slirp_check(n, nic, field)
  nic.hostfwd = F.list(n.hostfwd, field .. ".hostfwd", function(v, f)
    return F.spec_value({ "slirp", mac = nic.mac }, "hostfwd", v, f, "a forward like tcp::2222-:22")
  end)
end

local function slirp_spec(nic)
  if #nic.hostfwd == 0 then return "slirp" end
  return "slirp,hostfwd=" .. table.concat(nic.hostfwd, ";")
end

-- bhyve's own slirp backend parses PROTO:IPV4:PORT-IPV4:PORT and nothing
-- else, so a forward only netbe knows keeps the NIC out of bhyve.
local function slirp_bhyve(nic)
  for i, rule in ipairs(nic.hostfwd) do
    if (";" .. rule):find(";unix:", 1, true) or rule:find("[", 1, true) then
      return nil, string.format("bhyve's slirp backend takes IPv4 tcp and udp forwards only, "
                                .. "not hostfwd[%d] %s", i, rule)
    end
  end
  return slirp_spec(nic)
end

row { name = "slirp", keys = { hostfwd = true }, check = slirp_check, bhyve = slirp_bhyve,
      netbe = slirp_spec, userspace = true }

-- A socket in QEMU's and passt's stream format, to whatever listens there.
local function stream_check(n, nic, field)
  nic.connect = F.spec_value({ "stream", mac = nic.mac }, "connect", n.connect, field .. ".connect",
                             "unix:/PATH, /PATH, HOST:PORT or [IPV6]:PORT")
end

local function stream_spec(nic) return "stream,connect=" .. nic.connect end

row { name = "stream", keys = { connect = true }, check = stream_check, netbe = stream_spec,
      userspace = true }

-- ==== Questions asked of any NIC ====

-- The netbe config string for NIC (what `bhyve-args --netbe` prints), or nil.
function nictypes.spec(nic)
  local netbe = types[nic.type].netbe
  return netbe and netbe(nic) .. (nic.mac and ",mac=" .. nic.mac or "")
end

-- The wire `netbe serve` runs for NIC, as the two specs of `netbe wire A B`:
-- A is the NIC's backend, the side that faces the VM (nictypes.spec), and B
-- is VM_END, the spec through which the VM reaches serve (serve's choice:
-- a stream socket, a vhost-user device, a tap). nil when the kernel
-- carries the NIC: then nothing needs to run for it.
function nictypes.wire(nic, vm_end)
  if not types[nic.type].userspace then return nil end
  return nictypes.spec(nic), vm_end
end

return nictypes
