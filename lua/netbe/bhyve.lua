-- netbe.bhyve: each VM NIC as a bhyve device argument and as a netbe
-- config string (what an embedder passes to netbe_open_str).
local bhyve = {}

-- The backend part shared by both forms, or nil for NICs bhyve cannot use.
local function backend(nic)
  local t = nic.type
  if t == "tap" then return nic.ifname end
  if t == "ngd" then return nic.device end
  if t == "netgraph" then
    local s = "netgraph,path=" .. nic.switch.name .. ":,peerhook=link"
      .. (nic.switch.autolink and "" or tostring(nic.link))
    if nic.socket then s = s .. ",socket=" .. nic.socket end
    return s
  end
  if t == "slirp" then
    if #nic.hostfwd == 0 then return "slirp" end
    return "slirp,hostfwd=" .. table.concat(nic.hostfwd, ";")
  end
  return nil
end

-- "-s SLOT,virtio-net,BACKEND[,mac=MAC]", or nil and why bhyve has no device for it.
function bhyve.arg(nic)
  local be = backend(nic)
  if not be then return nil, "a " .. nic.type .. " NIC has no bhyve backend" end
  return "-s " .. nic.slot .. ",virtio-net," .. be .. (nic.mac and ",mac=" .. nic.mac or "")
end

-- The netbe config string for the NIC.
function bhyve.netbe(nic)
  local s
  if nic.type == "tap" then
    s = nic.ifname:match("^tap") and nic.ifname or nic.ifname .. ",type=tap"
  elseif nic.type == "stream" then
    s = "stream,connect=" .. nic.connect
  elseif nic.type == "veth" then
    return nil
  else
    s = backend(nic)
  end
  return s .. (nic.mac and ",mac=" .. nic.mac or "")
end

return bhyve
