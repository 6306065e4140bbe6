-- netbe.render_freebsd: a topology as FreeBSD steps (kldload, ifconfig,
-- sysctl, ngctl, pfctl, dnsmasq).
--
-- pf: netbe loads rules only into its own anchor netbe/NAME. It never reads
-- or writes /etc/pf.conf and never loads the main ruleset. The main ruleset
-- must already evaluate netbe's anchors; when it does not, apply refuses and
-- prints the two lines to add.
local dnsmasq = require("netbe.dnsmasq")
local nictypes = require("netbe.nictypes")
local plan = require("netbe.plan")

local R = {}

R.ANCHOR_LINES = 'nat-anchor "netbe/*"\nanchor "netbe/*"'

local function if_probe(ifname, extra)
  local c = { argv = { "ifconfig", ifname } }
  if extra then for k, v in pairs(extra) do c[k] = v end end
  return { c }
end

local function kld_step(mods)
  local probe = {}
  for _, m in ipairs(mods) do probe[#probe + 1] = { argv = { "kldstat", "-q", "-m", m } } end
  local argv = { "kldload", "-nq" }
  for _, m in ipairs(mods) do argv[#argv + 1] = m end
  -- Modules stay loaded on destroy: something else may use them.
  return { id = "kld:" .. table.concat(mods, ","), what = "load " .. table.concat(mods, " "),
           run = { argv }, probe = probe, inverse = {} }
end

-- The step ID of topology TOPO that creates IFNAME with CREATE (the
-- kernel's name fixed by RENAME, see plan): it marks the interface as
-- netbe's with its description, and destroy removes it only while that
-- marker is there (plan's owns). ifconfig shows no ifindex.
function R.create_step(topo, id, what, ifname, create, rename)
  local marker = "netbe:" .. topo.name .. ":" .. id
  return { id = id, what = what, run = { create, { "ifconfig", ifname, "description", marker } },
           rename = rename, probe = if_probe(ifname),
           owns = { ifname = ifname, marker = marker, show = { "ifconfig", ifname },
                    marker_pattern = "\n%s*description: ([^\n]*)" },
           inverse = { { "ifconfig", ifname, "destroy" } } }
end

local function addm_step(bridge, port)
  return { id = "port:" .. bridge .. ":" .. port, what = "add " .. port .. " to bridge " .. bridge,
           run = { { "ifconfig", bridge, "addm", port } },
           probe = if_probe(bridge, { plain = "member: " .. port .. " " }),
           touches = { bridge, port },
           inverse = { { "ifconfig", bridge, "deletem", port } } }
end

local function up_step(ifname)
  return { id = "up:" .. ifname, what = "bring " .. ifname .. " up",
           run = { { "ifconfig", ifname, "up" } },
           probe = if_probe(ifname, { match = "flags=%x+<UP[,>]" }), touches = { ifname },
           inverse = {} }
end

-- ng_ether names its node after the interface with '.' and ':' made '_'.
function R.ng_node(ifname) return (ifname:gsub("[.:]", "_")) end

-- The netgraph bridge recipe: the uplink's lower hook into link0, its
-- upper hook into link1, promiscuous and keeping the guests' source MACs.
function R.netgraph_commands(sw)
  local up = R.ng_node(sw.uplink) .. ":"
  local node = sw.name .. ":"
  local cmds = {
    { "mkpeer", up, "bridge", "lower", "link0" },
    { "name", up .. "lower", sw.name },
    { "connect", up, node, "upper", "link1" },
    { "msg", up, "setpromisc", "1" },
    { "msg", up, "setautosrc", "0" },
  }
  if sw.persistent then cmds[#cmds + 1] = { "msg", node, "setpersistent" } end
  return cmds
end

function R.ngctl_script(sw)
  local lines = {}
  for i, c in ipairs(R.netgraph_commands(sw)) do lines[i] = table.concat(c, " ") end
  return table.concat(lines, "\n") .. "\n"
end

local function netgraph_steps(sw, add)
  local up = R.ng_node(sw.uplink) .. ":"
  local run = {}
  for i, c in ipairs(R.netgraph_commands(sw)) do run[i] = { "ngctl", table.unpack(c) } end
  add { id = "netgraph:" .. sw.name, what = "netgraph bridge " .. sw.name .. " on " .. sw.uplink,
        run = run, script = R.ngctl_script(sw),
        probe = { { argv = { "ngctl", "status", sw.name .. ":" } } },
        inverse = { { "ngctl", "shutdown", sw.name .. ":" },
                    { "ngctl", "msg", up, "setpromisc", "0" },
                    { "ngctl", "msg", up, "setautosrc", "1" } } }
end

local function switch_steps(topo, sw, add)
  if sw.type == "netgraph" then return netgraph_steps(sw, add) end
  if sw.type == "existing" then return add(plan.existing_switch(sw, if_probe(sw.ifname))) end
  add(R.create_step(topo, "bridge:" .. sw.ifname, "create bridge " .. sw.ifname, sw.ifname,
                    { "ifconfig", "bridge", "create", "name", sw.ifname }))
  if sw.mtu then
    add { id = "mtu:" .. sw.ifname, what = "set MTU " .. sw.mtu .. " on " .. sw.ifname,
          run = { { "ifconfig", sw.ifname, "mtu", tostring(sw.mtu) } },
          probe = if_probe(sw.ifname, { plain = " mtu " .. sw.mtu }), touches = { sw.ifname },
          inverse = {} }
  end
  local uplink = sw.uplink
  if sw.vlan then
    -- vlan(4): "ifconfig re1.10 create" makes VLAN 10 on re1.
    add(R.create_step(topo, "vlan:" .. sw.vlan_if, "create VLAN " .. sw.vlan .. " on " .. sw.uplink,
                      sw.vlan_if, { "ifconfig", sw.vlan_if, "create" }))
    add(up_step(sw.vlan_if))
    uplink = sw.vlan_if
  end
  if uplink then add(addm_step(sw.ifname, uplink)) end
  for _, m in ipairs(sw.members or {}) do add(addm_step(sw.ifname, m)) end
  if sw.address then
    local a = sw.address
    add { id = "addr:" .. sw.ifname, what = "address " .. a.text .. " on " .. sw.ifname,
          run = { { "ifconfig", sw.ifname, "inet", a.text, "alias" } },
          probe = if_probe(sw.ifname, { plain = "inet " .. a.addr .. " netmask " }),
          touches = { sw.ifname }, inverse = { { "ifconfig", sw.ifname, "inet", a.addr, "-alias" } } }
  end
  add(up_step(sw.ifname))
end

-- The steps that put a tap or veth NIC, made by its nictypes row, on its
-- bridge.
function R.port_steps(nic, add)
  local sw = nic.switch
  add(addm_step(sw.ifname, nic.ifname))
  if nic.private or sw.private then
    add { id = "private:" .. nic.ifname, what = "make " .. nic.ifname .. " a private port",
          run = { { "ifconfig", sw.ifname, "private", nic.ifname } },
          probe = if_probe(sw.ifname, { match = "member: " .. nic.ifname .. " flags=%x+<[^>]*PRIVATE" }),
          touches = { sw.ifname, nic.ifname },
          inverse = { { "ifconfig", sw.ifname, "-private", nic.ifname } } }
  end
end

function R.pf_rules(topo)
  local lines = {}
  for _, sw in ipairs(topo.switch_list) do
    if sw.type == "nat" then
      lines[#lines + 1] = string.format("nat on %s from %s to any -> (%s)",
                                        sw.outbound, sw.address.network, sw.outbound)
    end
  end
  return lines
end

local function nat_steps(topo, files, add)
  local rules = R.pf_rules(topo)
  if #rules == 0 then return end
  local anchor = "netbe/" .. topo.name
  add(plan.sysctl_step("forwarding", "enable IPv4 forwarding", "net.inet.ip.forwarding", "1",
                       { "sysctl" }))
  local path = files .. "/pf.conf"
  local text = "# netbe: rules of anchor " .. anchor .. "; written by netbe, do not edit\n"
    .. table.concat(rules, "\n") .. "\n"
  add(plan.write_step("pf-conf", "write the pf rules of anchor " .. anchor, path, text))
  local probe = {}
  for _, sw in ipairs(topo.switch_list) do
    if sw.type == "nat" then
      probe[#probe + 1] = { argv = { "pfctl", "-a", anchor, "-sn" },
                            match = "nat on " .. sw.outbound:gsub("%p", "%%%0") .. " .-from "
                              .. sw.address.network:gsub("%p", "%%%0") .. " to any %-> %("
                              .. sw.outbound:gsub("%p", "%%%0") .. "%)" }
    end
  end
  add { id = "pf-anchor", what = "load the NAT rules into anchor " .. anchor,
        run = { { "pfctl", "-a", anchor, "-f", path } }, probe = probe, follows = "pf-conf",
        inverse = { { "pfctl", "-a", anchor, "-F", "all" } } }
  -- pf stays enabled on destroy: the host's own rules may depend on it.
  add { id = "pf-enable", what = "enable pf",
        run = { { "pfctl", "-e" } }, ok_output = "already enabled",
        probe = { { argv = { "pfctl", "-s", "info" }, plain = "Status: Enabled" } },
        inverse = {} }
  dnsmasq.add_all(topo, files, add)
end

-- The steps for TOPO. FILES is the directory for the files the tool writes.
function R.render(topo, files)
  local steps = {}
  local function add(s) steps[#steps + 1] = s end
  local has = {}
  for _, sw in ipairs(topo.switch_list) do has[sw.type] = true end
  if has.netgraph then add(kld_step({ "ng_ether", "ng_bridge" })) end
  if has.nat then
    add(kld_step({ "pf" }))
    add { id = "pf-anchors", what = "check that the main pf ruleset evaluates netbe's anchors",
          probe = { { argv = { "pfctl", "-sn" }, plain = 'nat-anchor "netbe/*"' },
                    { argv = { "pfctl", "-sr" }, plain = 'anchor "netbe/*"' } },
          refuse = "pf's main ruleset does not evaluate netbe's anchors. netbe never edits "
            .. "/etc/pf.conf or the main ruleset. Add these lines to /etc/pf.conf (nat-anchor "
            .. "with the translation rules, anchor with the filter rules), then run "
            .. "'pfctl -f /etc/pf.conf':\n" .. R.ANCHOR_LINES }
  end
  for _, sw in ipairs(topo.switch_list) do switch_steps(topo, sw, add) end
  for _, nic in ipairs(topo.nics) do
    if nic.vlan then
      return nil, nic.field .. ".vlan: per-port VLANs need bridge VLAN filtering, which the FreeBSD "
        .. "renderer does not do; use a switch with vlan = " .. nic.vlan .. " instead"
    end
    local make = nictypes.types[nic.type].steps
    if make then make.freebsd(topo, nic, add, R) end
  end
  nat_steps(topo, files, add)
  return plan.checks_first(steps)
end

return R
