-- slirp_ctl.lua: a tap wired to a slirp backend, steered through files, so
-- a spec can change host forwarding on a running backend. Run it inside a
-- namespace (it opens sockets for the guest):
--   lua5.4 slirp_ctl.lua TAP SLIRP-SPEC DIR [offload]
-- Every 50 ms it looks for DIR/cmd ("add RULE", "remove RULE", "list" or
-- "maxframe"), runs it and writes the answer to DIR/out (written whole,
-- then renamed). With "offload" the tap hands slirp checksum-partial and
-- TSO frames, moved by a pump here (netbe.wire negotiates no offloads).
package.cpath = arg[0]:gsub("tests/helpers/slirp_ctl%.lua$", "lua/?.so;") .. package.cpath
local netbe = require("netbe")
local tap_name, spec, dir, mode = arg[1], arg[2], arg[3], arg[4]

local tap = netbe.open(tap_name)
local slirp = netbe.open(spec)
local wire
local maxframe = 0            -- the longest frame the tap handed over

if mode == "offload" then
  assert(tap:set_cap(netbe.F_GUEST_CSUM | netbe.F_GUEST_TSO4 | netbe.F_GUEST_TSO6 |
                     netbe.F_GUEST_ECN, 10))
  assert(slirp:set_cap(netbe.F_CSUM | netbe.F_HOST_TSO4 | netbe.F_HOST_TSO6 |
                       netbe.F_HOST_ECN, 10))
  tap:on(function()
    for f in function() return tap:recv() end do
      if #f > maxframe then maxframe = #f end
      slirp:send(f)
    end
  end)
  slirp:on(function()
    for f in function() return slirp:recv() end do tap:send(f) end
  end)
else
  wire = netbe.wire(tap, slirp)
end

local function answer(text)
  local f = assert(io.open(dir .. "/out.tmp", "w"))
  f:write(text, "\n")
  f:close()
  os.rename(dir .. "/out.tmp", dir .. "/out")
end

local function step()
  local f = io.open(dir .. "/cmd")
  if not f then return end
  local cmd = f:read("l") or ""
  f:close()
  os.remove(dir .. "/cmd")
  local verb, rule = cmd:match("^(%a+)%s*(.*)$")
  if verb == "add" or verb == "remove" then
    local ok, err = slirp["hostfwd_" .. verb](slirp, rule)
    answer(ok and "ok" or ("error " .. err))
  elseif verb == "maxframe" then
    answer(tostring(maxframe))
  elseif verb == "list" then
    answer(table.concat(slirp:hostfwd_list(), "\n"))
  else
    answer("error unknown command '" .. cmd .. "'")
  end
end

print("slirp_ctl: ready")
io.stdout:flush()
netbe.run{ signals = true, every = 0.05, tick = step }
if wire then wire:close() end
slirp:close(); tap:close()
