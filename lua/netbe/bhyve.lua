-- netbe.bhyve: each VM NIC as a bhyve device argument and as a netbe
-- config string (what an embedder passes to netbe_open_str), from its
-- row in netbe.nictypes.
local nictypes = require("netbe.nictypes")

local bhyve = {}

-- "-s SLOT,virtio-net,BACKEND[,mac=MAC]", or nil and why bhyve has no device for it.
function bhyve.arg(nic)
  local backend = nictypes.types[nic.type].bhyve
  if not backend then return nil, "a " .. nic.type .. " NIC has no bhyve backend" end
  local be, why = backend(nic)
  if not be then return nil, why end
  return "-s " .. nic.slot .. ",virtio-net," .. be .. (nic.mac and ",mac=" .. nic.mac or "")
end

-- The netbe config string for the NIC, or nil when netbe cannot open it.
bhyve.netbe = nictypes.spec

return bhyve
