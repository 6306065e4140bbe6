-- netbe.topology: loads a host topology written in Lua and checks it.
--
-- A topology file is a Lua chunk that sets globals (or returns a table):
--   name     = "lab"                       -- names the state, the pf anchor
--                                          -- netbe/lab and the nft table netbe_lab
--   switches = { NAME = { type = ..., ... }, ... }
--   vms      = { NAME = { nics = { { switch = NAME, ... }, ... } }, ... }
-- Switch types and their keys are in SWITCH_KEYS below; NIC types, their
-- keys and checks in netbe.nictypes.
-- The file runs in a sandbox of its own (see topology.load): it may compute
-- (string, table, math, pairs, ...) but cannot reach io, os, require or
-- load, and has bounds on memory and time: it describes, it does not act.
-- Errors name the file, the field and what was expected.
local F = require("netbe.fields")
local nictypes = require("netbe.nictypes")

local topology = {}

local SWITCH_KEYS = {
  bridge   = { type = true, uplink = true, members = true, address = true, mtu = true,
               vlan = true, private = true },
  nat      = { type = true, address = true, outbound = true, dhcp = true, mtu = true,
               members = true, private = true },
  netgraph = { type = true, uplink = true, persistent = true, autolink = true },
  existing = { type = true, interface = true },
}
local TOP_KEYS = { name = true, switches = true, vms = true }
local DHCP_KEYS = { range = true, lease = true }

local bad, describe, sorted_keys, check_keys = F.bad, F.describe, F.sorted_keys, F.check_keys

-- "a.b.c.d" -> 32-bit number, or nil.
function topology.ip4(s)
  if type(s) ~= "string" then return nil end
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = 0
  for _, part in ipairs({ a, b, c, d }) do
    if #part > 1 and part:sub(1, 1) == "0" then return nil end
    local v = tonumber(part)
    if v > 255 then return nil end
    n = n * 256 + v
  end
  return n
end

function topology.ip4_text(n)
  return string.format("%d.%d.%d.%d", n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
end

-- "10.0.0.1/24" -> { addr = "10.0.0.1", prefix = 24, network = "10.0.0.0/24",
-- first = n, last = n }, or nil and the reason.
function topology.cidr(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local ip, len = s:match("^([%d.]+)/(%d+)$")
  if not ip then return nil, "expected ADDRESS/PREFIX like 10.0.0.1/24" end
  local n, p = topology.ip4(ip), tonumber(len)
  if not n then return nil, "'" .. ip .. "' is not an IPv4 address" end
  if p < 1 or p > 30 then return nil, "prefix /" .. len .. " is not in 1..30" end
  local mask = (0xffffffff << (32 - p)) & 0xffffffff
  local net = n & mask
  local bcast = net | (~mask & 0xffffffff)
  if n == net or n == bcast then
    return nil, "'" .. ip .. "' is the network or broadcast address of /" .. len
  end
  return { addr = ip, prefix = p, n = n, net = net, mask = mask, bcast = bcast,
           network = topology.ip4_text(net) .. "/" .. p, text = s }
end

local function cidr_field(v, field)
  local c, why = topology.cidr(v)
  if not c then bad(field, "expected an IPv4 address with prefix like 10.0.0.1/24, got %s: %s", describe(v), why) end
  return c
end

local function check_dhcp(v, field, addr)
  if v == nil or v == false then return nil end
  if v == true then v = {} end
  check_keys(v, DHCP_KEYS, field, "dhcp")
  local d = { lease = v.lease or "12h" }
  if type(d.lease) ~= "string" or not d.lease:match("^%d+[smhd]?$") then
    bad(field .. ".lease", "expected a lease time like 12h or 3600, got %s", describe(v.lease))
  end
  local r = v.range
  if r == nil then
    -- Default: the upper half of the subnet, minus the broadcast address.
    local size = addr.bcast - addr.net
    local lo, hi = addr.net + (size + 1) // 2, addr.bcast - 1
    if lo <= addr.n and addr.n <= hi then lo = addr.n + 1 end
    if lo > hi then
      bad(field, "%s has no room for a default DHCP range next to %s; give dhcp.range", addr.network, addr.addr)
    end
    r = { topology.ip4_text(lo), topology.ip4_text(hi) }
  elseif type(r) ~= "table" or #r ~= 2 then
    bad(field .. ".range", "expected { FIRST, LAST } addresses, got %s", describe(r))
  end
  for i = 1, 2 do
    local n = topology.ip4(r[i])
    if not n then bad(field .. ".range[" .. i .. "]", "expected an IPv4 address, got %s", describe(r[i])) end
    if n & addr.mask ~= addr.net or n == addr.net or n == addr.bcast then
      bad(field .. ".range[" .. i .. "]", "%s is outside %s", r[i], addr.network)
    end
    if n == addr.n then bad(field .. ".range[" .. i .. "]", "%s is the switch's own address", r[i]) end
  end
  if topology.ip4(r[1]) > topology.ip4(r[2]) then
    bad(field .. ".range", "first address %s is after last %s", r[1], r[2])
  end
  d.first, d.last = r[1], r[2]
  return d
end

local function check_switch(name, s, field)
  F.name(name, field, "a switch name")
  if type(s) ~= "table" then bad(field, "expected a table, got %s", describe(s)) end
  local ty = s.type
  if not SWITCH_KEYS[ty] then
    bad(field .. ".type", "expected one of bridge, nat, netgraph, existing, got %s", describe(ty))
  end
  check_keys(s, SWITCH_KEYS[ty], field, ty .. " switch")
  local sw = { name = name, type = ty }
  if ty == "existing" then
    sw.ifname = s.interface and F.ifname(s.interface, field .. ".interface") or name
    return sw
  end
  sw.ifname = name
  if ty == "netgraph" then
    if s.uplink == nil then bad(field .. ".uplink", "a netgraph switch needs an uplink interface") end
    sw.uplink = F.ifname(s.uplink, field .. ".uplink")
    sw.persistent = F.bool(s.persistent, field .. ".persistent")
    sw.autolink = F.bool(s.autolink, field .. ".autolink")
    return sw
  end
  if s.uplink ~= nil then sw.uplink = F.ifname(s.uplink, field .. ".uplink") end
  sw.members = F.list(s.members, field .. ".members", F.ifname)
  if s.mtu ~= nil then sw.mtu = F.int(s.mtu, field .. ".mtu", 576, 65535, "an MTU") end
  sw.private = F.bool(s.private, field .. ".private")
  if s.address ~= nil then sw.address = cidr_field(s.address, field .. ".address") end
  if ty == "bridge" and s.vlan ~= nil then
    sw.vlan = F.int(s.vlan, field .. ".vlan", 1, 4094, "a VLAN id")
    if not sw.uplink then bad(field .. ".vlan", "a VLAN needs an uplink to tag on") end
    sw.vlan_if = sw.uplink .. "." .. sw.vlan
    if #sw.vlan_if > 15 then
      bad(field .. ".vlan", "VLAN interface name %s is longer than 15 characters", sw.vlan_if)
    end
  end
  if ty == "nat" then
    if not sw.address then bad(field .. ".address", "a NAT switch needs an address like 10.0.0.1/24") end
    if s.outbound == nil then bad(field .. ".outbound", "a NAT switch needs the outbound interface") end
    sw.outbound = F.ifname(s.outbound, field .. ".outbound")
    sw.dhcp = check_dhcp(s.dhcp, field .. ".dhcp", sw.address)
  end
  return sw
end

-- Lists NAMES as "a, b or c".
local function either(names)
  if #names < 2 then return names[1] or "" end
  return table.concat(names, ", ", 1, #names - 1) .. " or " .. names[#names]
end

-- The NIC types that plug into a SWTYPE switch, or with SWTYPE nil those
-- that take no switch, in nictypes.ORDER.
local function types_for(swtype)
  local names = {}
  for _, t in ipairs(nictypes.ORDER) do
    local plugs = nictypes.types[t].switches
    if plugs and plugs[swtype] or not (plugs or swtype) then names[#names + 1] = t end
  end
  return names
end

local NIC_KEYS = {}
for k in pairs(nictypes.COMMON_KEYS) do NIC_KEYS[k] = true end
for _, t in ipairs(nictypes.ORDER) do
  for k in pairs(nictypes.types[t].keys) do NIC_KEYS[k] = true end
end

-- A NIC's type and its nictypes row: the type it names, else the first
-- that plugs into its switch.
local function check_nic_type(n, sw, field)
  local ty = n.type
  if ty == nil and sw then ty = types_for(sw.type)[1] end
  if ty == nil then bad(field .. ".switch", "a NIC needs a switch, or type %s", either(types_for(nil))) end
  local entry = nictypes.types[ty]
  if not entry then
    bad(field .. ".type", "expected %s, got %s", either(nictypes.ORDER), describe(ty))
  end
  if not entry.switches then
    if sw then bad(field .. ".switch", "a %s NIC has no switch", ty) end
  elseif not sw then
    bad(field .. ".switch", "a %s NIC needs a switch", describe(ty))
  elseif not entry.switches[sw.type] then
    bad(field .. ".type", "a %s switch takes NIC types %s, got %s", sw.type,
        table.concat(types_for(sw.type), ", "), describe(ty))
  end
  return ty, entry
end

local function check_nic(vm, i, n, switches, field)
  check_keys(n, NIC_KEYS, field, "NIC")
  local nic = { vm = vm, index = i - 1 }
  local sw
  if n.switch ~= nil then
    sw = switches[n.switch]
    if not sw then bad(field .. ".switch", "no switch named %s in this topology", describe(n.switch)) end
    nic.switch = sw
  end
  local entry
  nic.type, entry = check_nic_type(n, sw, field)
  if n.mac ~= nil then
    if not F.is_mac(n.mac) then
      bad(field .. ".mac", "expected a unicast MAC like 52:54:00:12:34:56, got %s", describe(n.mac))
    end
    nic.mac = n.mac:lower()
  end
  nic.slot = n.slot ~= nil and tostring(n.slot) or string.format("%d:0", 5 + nic.index)
  if not nic.slot:match("^%d+$") and not nic.slot:match("^%d+:%d+$") and not nic.slot:match("^%d+:%d+:%d+$") then
    bad(field .. ".slot", "expected a PCI slot like 5, 2:0 or 0:2:0, got %s", describe(n.slot))
  end
  entry.check(n, nic, field)
  for _, k in ipairs(sorted_keys(n)) do
    if not nictypes.COMMON_KEYS[k] and not entry.keys[k] then
      bad(field .. "." .. k, "not used by a %s NIC", nic.type)
    end
  end
  return nic
end

-- Netgraph link numbers: link0 and link1 carry the uplink's lower and upper
-- hooks; VM NICs take 2, 3, ... in file order unless they name one. The
-- numbers are fixed by the topology, so two VMs started at once never race
-- for the same hook.
local function assign_links(t)
  for _, sw in ipairs(t.switch_list) do
    if sw.type == "netgraph" then
      local used, nics = { [0] = true, [1] = true }, {}
      for _, nic in ipairs(t.nics) do
        if nic.switch == sw then
          nics[#nics + 1] = nic
          if nic.link then
            if used[nic.link] then
              bad(nic.field .. ".link", "link%d of %s is already taken", nic.link, sw.name)
            end
            used[nic.link] = true
          end
        end
      end
      local nextn = 2
      for _, nic in ipairs(nics) do
        if not nic.link then
          while used[nextn] do nextn = nextn + 1 end
          if nextn > 31 then bad(nic.field, "no free link on %s (ng_bridge has 32)", sw.name) end
          nic.link, used[nextn] = nextn, true
        end
      end
    end
  end
end

local function check_unique_ifnames(t)
  local seen = {}
  local function claim(name, field)
    if seen[name] then bad(field, "interface %s is also made by %s", name, seen[name]) end
    seen[name] = field
  end
  for _, sw in ipairs(t.switch_list) do
    if sw.type ~= "existing" then claim(sw.ifname, "switches." .. sw.name) end
  end
  for _, nic in ipairs(t.nics) do
    if nic.ifname then claim(nic.ifname, nic.field .. ".ifname") end
    if nic.peer then claim(nic.peer, nic.field .. ".peer") end
  end
end

-- Checks a topology table; returns the normalized topology or raises a
-- located error table. DEFAULT_NAME names a topology that sets no name.
local function check(raw, default_name)
  check_keys(raw, TOP_KEYS, "topology", "a topology")
  local t = { switches = {}, switch_list = {}, vms = {}, vm_list = {}, nics = {} }
  local name = raw.name or default_name
  if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_]*$") or #name > 24 then
    bad("name", "expected a topology name: a lower-case letter, then lower-case letters, digits or '_', at most 24 characters, got %s",
        describe(name))
  end
  t.name = name
  local switches = raw.switches or {}
  if type(switches) ~= "table" then bad("switches", "expected a table of switches, got %s", describe(switches)) end
  for _, k in ipairs(sorted_keys(switches)) do
    local sw = check_switch(k, switches[k], "switches." .. tostring(k))
    t.switches[k] = sw
    t.switch_list[#t.switch_list + 1] = sw
  end
  local vms = raw.vms or {}
  if type(vms) ~= "table" then bad("vms", "expected a table of VMs, got %s", describe(vms)) end
  for _, k in ipairs(sorted_keys(vms)) do
    local field = "vms." .. tostring(k)
    if type(k) ~= "string" or not k:match("^[A-Za-z][A-Za-z0-9_%-]*$") or #k > 31 then
      bad(field, "expected a VM name: a letter then letters, digits, '_' or '-', at most 31 characters, got %s",
          describe(k))
    end
    check_keys(vms[k], { nics = true }, field, "a VM")
    local vm = { name = k, nics = {} }
    local nics = vms[k].nics or {}
    if type(nics) ~= "table" or #nics ~= #sorted_keys(nics) then
      bad(field .. ".nics", "expected a list of NICs { {...}, {...} }, got %s", describe(nics))
    end
    for i, n in ipairs(nics) do
      local nf = field .. ".nics[" .. i .. "]"
      local nic = check_nic(k, i, n, t.switches, nf)
      nic.field = nf
      vm.nics[i] = nic
      t.nics[#t.nics + 1] = nic
    end
    t.vms[k] = vm
    t.vm_list[#t.vm_list + 1] = vm
  end
  check_unique_ifnames(t)
  assign_links(t)
  return t
end

-- Checks a topology given as a table. Returns the topology, or nil and
-- "SOURCE: FIELD: reason".
function topology.check(raw, source, default_name)
  local ok, res = pcall(check, raw, default_name)
  if ok then return res end
  if type(res) == "table" then
    return nil, require("netbe").one_line(string.format("%s: %s: %s", source or "topology",
                                                        res.field, res.msg))
  end
  error(res, 0)
end

-- Loads and checks a topology file, run in a sandbox of its own
-- (netbe.run_file; LIMITS: {memory = bytes, time = seconds}, default 64 MiB
-- and 1 s). What it set or returned comes back as plain data. Returns the
-- topology, or nil and a one-line message naming the file.
function topology.load(path, limits)
  limits = limits or {}
  local res, err = require("netbe").run_file(path, { what = "topology file", globals = true,
                                                     memory = limits.memory, time = limits.time })
  if not res then return nil, err end
  local base = path:match("([^/]*)$"):gsub("%.lua$", ""):lower():gsub("[^a-z0-9_]", "_")
  if not base:match("^[a-z]") then base = "t" .. base end
  local ok, t, cerr = pcall(topology.check, res.value or {}, path, base)
  if not ok then return nil, require("netbe").one_line(path .. ": " .. tostring(t)) end
  return t, cerr
end

return topology
