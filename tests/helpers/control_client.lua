-- control_client.lua: a client of netbe's control socket (README,
-- "Control socket") for the specs: start a process that serves one, and
-- send it requests.
local ns = require("ns")
local json = require("dkjson")
local netbe = require("netbe")

local cc = {}

-- Wait until the control socket SOCK exists; LOG is what its process
-- printed, shown when it never does.
function cc.wait(sock, log)
  assert(ns.wait_for(function() return ns.sh("test -S " .. ns.quote(sock)) end, 10),
         "no control socket: " .. ns.read(log))
end

-- Start `netbe CMD` in the background, SOCK and DIR in CMD replaced by the
-- socket's path (default DIR/ctl.sock) and a new directory; returns pid,
-- log, socket path, directory.
function cc.start(cmd, sock)
  local dir = ns.tmpdir()
  sock = sock or dir .. "/ctl.sock"
  local pid, log = ns.spawn(ns.netbe .. " " .. cmd:gsub("SOCK", sock):gsub("DIR", dir))
  cc.wait(sock, log)
  return pid, log, sock, dir
end

-- Send TEXT (one or more request lines) and return the answers, decoded,
-- and the text that came back.
function cc.ask(sock, text)
  local out = assert(netbe.control_call(sock, text, 10))
  local answers = {}
  for line in out:gmatch("[^\n]+") do answers[#answers + 1] = assert(json.decode(line), line) end
  return answers, out
end

-- Send the request {execute = CMD, arguments = ARGS}; returns its answer.
function cc.call(sock, cmd, args)
  return cc.ask(sock, json.encode({ execute = cmd, arguments = args }) .. "\n")[1]
end

return cc
