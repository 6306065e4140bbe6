-- netbe.render_linux: a topology as Linux steps (ip, bridge, sysctl, nft,
-- dnsmasq). Firewall rules live only in the tool's own nft table
-- "ip netbe_NAME", replaced as a whole in one `nft -f` transaction.
local dnsmasq = require("netbe.dnsmasq")
local nictypes = require("netbe.nictypes")
local plan = require("netbe.plan")

local R = {}

local function link_probe(ifname, extra)
  local c = { argv = { "ip", "-o", "link", "show", "dev", ifname } }
  if extra then for k, v in pairs(extra) do c[k] = v end end
  return { c }
end

-- Interface names go after "dev" or "name" in every ip command: a bare
-- one that is a prefix of an ip keyword ("n", "type") would be parsed as it.

-- The step ID of topology TOPO that creates IFNAME with CREATE: it marks
-- the interface as netbe's with an ifalias, and destroy deletes it only
-- while that marker is there (plan's owns).
function R.create_step(topo, id, what, ifname, create)
  local marker = "netbe:" .. topo.name .. ":" .. id
  return { id = id, what = what,
           run = { create, { "ip", "link", "set", "dev", ifname, "alias", marker } },
           probe = link_probe(ifname),
           owns = { ifname = ifname, marker = marker, show = { "ip", "-o", "link", "show", "dev", ifname },
                    marker_pattern = "\\%s+alias (.-)%s*$", index_pattern = "^(%d+):" },
           inverse = { { "ip", "link", "del", "dev", ifname } } }
end

local function up_step(ifname)
  return { id = "up:" .. ifname, what = "bring " .. ifname .. " up",
           run = { { "ip", "link", "set", "dev", ifname, "up" } },
           probe = link_probe(ifname, { match = "[<,]UP[,>]" }),
           touches = { ifname }, inverse = {} }
end

local function master_step(port, bridge)
  return { id = "port:" .. bridge .. ":" .. port, what = "add " .. port .. " to bridge " .. bridge,
           run = { { "ip", "link", "set", "dev", port, "master", bridge } },
           probe = link_probe(port, { plain = " master " .. bridge .. " " }),
           touches = { port, bridge },
           inverse = { { "ip", "link", "set", "dev", port, "nomaster" } } }
end

local function private_step(port)
  return { id = "private:" .. port, what = "isolate bridge port " .. port,
           run = { { "ip", "link", "set", "dev", port, "type", "bridge_slave", "isolated", "on" } },
           probe = { { argv = { "ip", "-d", "-o", "link", "show", "dev", port }, plain = "isolated on" } },
           touches = { port },
           inverse = { { "ip", "link", "set", "dev", port, "type", "bridge_slave", "isolated", "off" } } }
end

local function uses_vlans(topo, sw)
  for _, nic in ipairs(topo.nics) do
    if nic.switch == sw and nic.vlan then return true end
  end
  return false
end

local function switch_steps(topo, sw, add)
  if sw.type == "existing" then return add(plan.existing_switch(sw, link_probe(sw.ifname))) end
  local create = { "ip", "link", "add", "name", sw.ifname, "type", "bridge" }
  if uses_vlans(topo, sw) then
    create[#create + 1] = "vlan_filtering"; create[#create + 1] = "1"
  end
  add(R.create_step(topo, "bridge:" .. sw.ifname, "create bridge " .. sw.ifname, sw.ifname, create))
  if sw.mtu then
    add { id = "mtu:" .. sw.ifname, what = "set MTU " .. sw.mtu .. " on " .. sw.ifname,
          run = { { "ip", "link", "set", "dev", sw.ifname, "mtu", tostring(sw.mtu) } },
          probe = link_probe(sw.ifname, { plain = " mtu " .. sw.mtu .. " " }),
          touches = { sw.ifname }, inverse = {} }
  end
  local uplink = sw.uplink
  if sw.vlan then
    add(R.create_step(topo, "vlan:" .. sw.vlan_if, "create VLAN " .. sw.vlan .. " on " .. sw.uplink,
                      sw.vlan_if, { "ip", "link", "add", "link", sw.uplink, "name", sw.vlan_if,
                                    "type", "vlan", "id", tostring(sw.vlan) }))
    add(up_step(sw.vlan_if))
    uplink = sw.vlan_if
  end
  if uplink then add(master_step(uplink, sw.ifname)) end
  for _, m in ipairs(sw.members or {}) do add(master_step(m, sw.ifname)) end
  if sw.address then
    local a = sw.address.text
    add { id = "addr:" .. sw.ifname, what = "address " .. a .. " on " .. sw.ifname,
          run = { { "ip", "addr", "add", a, "dev", sw.ifname } },
          probe = { { argv = { "ip", "-o", "-4", "addr", "show", "dev", sw.ifname },
                      plain = " inet " .. a .. " " } },
          touches = { sw.ifname },
          inverse = { { "ip", "addr", "del", a, "dev", sw.ifname } } }
  end
  add(up_step(sw.ifname))
end

-- The steps that put a tap or veth NIC, made by its nictypes row, on its
-- bridge and bring it up.
function R.port_steps(nic, add)
  local sw = nic.switch
  add(master_step(nic.ifname, sw.ifname))
  if nic.private or sw.private then add(private_step(nic.ifname)) end
  if nic.vlan then
    local v = tostring(nic.vlan)
    add { id = "pvid:" .. nic.ifname, what = "VLAN " .. v .. " untagged on port " .. nic.ifname,
          run = { { "bridge", "vlan", "add", "dev", nic.ifname, "vid", v, "pvid", "untagged" },
                  { "bridge", "vlan", "del", "dev", nic.ifname, "vid", "1" } },
          probe = { { argv = { "bridge", "vlan", "show", "dev", nic.ifname },
                      match = "%f[%d]" .. v .. " PVID" } },
          touches = { nic.ifname }, inverse = {} }
    if sw.uplink then
      local up = sw.vlan_if or sw.uplink
      add { id = "tagged:" .. up .. ":" .. v, what = "VLAN " .. v .. " tagged on uplink " .. up,
            run = { { "bridge", "vlan", "add", "dev", up, "vid", v } },
            probe = { { argv = { "bridge", "vlan", "show", "dev", up }, match = "%f[%d]" .. v .. "%f[%D]" } },
            touches = { up }, inverse = { { "bridge", "vlan", "del", "dev", up, "vid", v } } }
    end
  end
  add(up_step(nic.ifname))
end

-- The tool's nft table: masquerade for every NAT switch.
function R.nft_table(topo)
  local t = "netbe_" .. topo.name
  local rules = {}
  for _, sw in ipairs(topo.switch_list) do
    if sw.type == "nat" then
      rules[#rules + 1] = string.format('\t\toifname "%s" ip saddr %s ip daddr != %s masquerade',
                                        sw.outbound, sw.address.network, sw.address.network)
    end
  end
  if #rules == 0 then return nil end
  -- Declaring the table first makes the delete valid on the first run, so
  -- the whole file is one transaction that replaces the table or fails.
  local text = table.concat({
    "# netbe: NAT for topology " .. topo.name .. "; written by netbe, do not edit",
    "table ip " .. t .. " {}",
    "delete table ip " .. t,
    "table ip " .. t .. " {",
    "\tchain postrouting {",
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    table.concat(rules, "\n"),
    "\t}",
    "}",
    "",
  }, "\n")
  return t, text, rules
end

local function nat_steps(topo, files, add)
  local t, text, rules = R.nft_table(topo)
  if not t then return end
  add(plan.sysctl_step("forwarding", "enable IPv4 forwarding", "net.ipv4.ip_forward", "1",
                       { "sysctl", "-w" }))
  local path = files .. "/nft.conf"
  add(plan.write_step("nft-conf", "write the nft rules of table " .. t, path, text))
  local probe = {}
  for _, r in ipairs(rules) do
    probe[#probe + 1] = { argv = { "nft", "list", "table", "ip", t }, plain = r:gsub("^%s+", "") }
  end
  add { id = "nft", what = "load table ip " .. t .. " in one transaction",
        run = { { "nft", "-f", path } }, probe = probe, follows = "nft-conf",
        inverse = { { "nft", "delete", "table", "ip", t } } }
  dnsmasq.add_all(topo, files, add)
end

-- The steps for TOPO. FILES is the directory for the files the tool writes.
-- Returns the list, or nil and an error for what Linux cannot render.
function R.render(topo, files)
  local steps = {}
  local function add(s) steps[#steps + 1] = s end
  for _, sw in ipairs(topo.switch_list) do
    if sw.type == "netgraph" then
      return nil, "switches." .. sw.name .. ": netgraph switches exist only on FreeBSD (use --os freebsd)"
    end
  end
  for _, sw in ipairs(topo.switch_list) do switch_steps(topo, sw, add) end
  for _, nic in ipairs(topo.nics) do
    local make = nictypes.types[nic.type].steps
    if make then make.linux(topo, nic, add, R) end
  end
  nat_steps(topo, files, add)
  return plan.checks_first(steps)
end

return R
