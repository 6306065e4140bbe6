-- netbe.dnsmasq: DHCP for a NAT switch, by a dnsmasq of the tool's own.
-- Each switch gets its own config, pid and lease files in the topology's
-- files directory, so it never reads /etc/dnsmasq.conf or meets another
-- dnsmasq's leases; DNS is off (port=0): it only hands out addresses.
local plan = require("netbe.plan")
local topology = require("netbe.topology")

local dnsmasq = {}

function dnsmasq.paths(files, sw)
  local base = files .. "/dnsmasq-" .. sw.name
  return { conf = base .. ".conf", pid = base .. ".pid", leases = base .. ".leases" }
end

function dnsmasq.conf(sw, p, topo_name)
  local a = sw.address
  local mask = topology.ip4_text(a.mask)
  return table.concat({
    "# netbe: DHCP on switch " .. sw.name .. " of topology " .. topo_name .. "; written by netbe, do not edit",
    "interface=" .. sw.ifname,
    "bind-interfaces",
    "except-interface=lo",
    "port=0",
    "dhcp-authoritative",
    string.format("dhcp-range=%s,%s,%s,%s", sw.dhcp.first, sw.dhcp.last, mask, sw.dhcp.lease),
    "dhcp-option=option:router," .. a.addr,
    "dhcp-leasefile=" .. p.leases,
    "pid-file=" .. p.pid,
    "",
  }, "\n")
end

-- Two steps: write the config, start dnsmasq on it. The running check is
-- "the pid in our pid file is a live dnsmasq", so a stale pid file or a
-- foreign dnsmasq never counts.
function dnsmasq.steps(sw, files, topo_name)
  local p = dnsmasq.paths(files, sw)
  local content = dnsmasq.conf(sw, p, topo_name)
  return {
    plan.write_step("dnsmasq-conf:" .. sw.name, "write the dnsmasq config for " .. sw.name,
                    p.conf, content),
    { id = "dnsmasq:" .. sw.name, what = "start dnsmasq serving DHCP on " .. sw.ifname,
      run = { { "dnsmasq", "--conf-file=" .. p.conf } },
      follows = "dnsmasq-conf:" .. sw.name,
      stop = { { "pkill", "-F", p.pid, "-x", "dnsmasq" } },
      probe = { { argv = { "pgrep", "-F", p.pid, "-x", "dnsmasq" } } },
      inverse = { { "pkill", "-F", p.pid, "-x", "dnsmasq" }, { "rm", "-f", p.pid, p.leases } } },
  }
end

-- Pass ADD the steps of every NAT switch of TOPO that serves DHCP.
function dnsmasq.add_all(topo, files, add)
  for _, sw in ipairs(topo.switch_list) do
    if sw.type == "nat" and sw.dhcp then
      for _, s in ipairs(dnsmasq.steps(sw, files, topo.name)) do add(s) end
    end
  end
end

return dnsmasq
