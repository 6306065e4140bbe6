-- tcpxfer.lua: runs tcpxfer.py's two ends in namespaces, so a spec can
-- move a TCP stream and compare its SHA-256 at both ends.
local ns = require("ns")

local tcpxfer = {}

local XFER = ns.root .. "/tests/helpers/tcpxfer.py"

-- Start a receiver in namespace R and a sender in S that sends BYTES to
-- ADDR PORT. OPTS (optional): listen, the address the receiver binds when
-- the sender's ADDR reaches it through a translation (default ADDR);
-- seconds, to spread the sending over. Returns done() (true once both ends
-- exited) and result() -> the "LEN SHA256" lines the sender and the
-- receiver printed (nil for one that printed none).
function tcpxfer.start(S, R, addr, port, bytes, opts)
  opts = opts or {}
  local rpid, rlog = R:spawn("python3 " .. XFER .. " recv " .. (opts.listen or addr) .. " " .. port)
  assert(ns.wait_for(function() return (R:exec("ss -ltn | grep -q :" .. port .. "\\ ")) end, 5),
         "the receiver did not listen: " .. ns.read(rlog))
  local spid, slog = S:spawn("python3 " .. XFER .. " send " .. addr .. " " .. port .. " " ..
                             bytes .. (opts.seconds and " " .. opts.seconds or ""))
  local function done() return not ns.alive(rpid) and not ns.alive(spid) end
  local function result()
    return ns.read(slog):match("%d+ %x+"), ns.read(rlog):match("%d+ %x+")
  end
  return done, result
end

return tcpxfer
