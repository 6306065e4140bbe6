-- ns.lua: throwaway network namespaces, links, processes and temp dirs for
-- busted specs. Everything made through here is removed by ns.cleanup(),
-- which every describe block registers with teardown(ns.cleanup).
local ns = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/tests/helpers/") or "."
local root = here:sub(1, 1) == "/" and here or (os.getenv("PWD") .. "/" .. here)
ns.root = root
ns.netbe = root .. "/scripts/netbe"

local owned = {namespaces = {}, links = {}, pids = {}, dirs = {}}

function ns.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a shell command on the host; returns ok, combined output.
function ns.sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

local function self_pid()
  local f = io.open("/proc/self/stat")
  local pid = f and f:read("n")
  if f then f:close() end
  return pid or math.random(1, 1e6)
end

local serial = 0
local tag = (function()
  local n, digits, s = self_pid(), "0123456789abcdefghijklmnopqrstuvwxyz", ""
  repeat
    local d = n % 36
    s = digits:sub(d + 1, d + 1) .. s
    n = n // 36
  until n == 0
  return s
end)()

-- A name unique to this process and call, at most 15 characters, usable
-- for interfaces and namespaces. PREFIX: letters only.
function ns.unique(prefix)
  prefix = prefix or "nb"
  assert(prefix:match("^%a+$"), "ns.unique: prefix must be letters only")
  serial = serial + 1
  local name = prefix:sub(1, 15 - #tag - 1 - #tostring(serial)) .. tag .. "x" .. serial
  return name:sub(1, 15)
end

-- The contents of file PATH, or "" when it cannot be read.
function ns.read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Write TEXT to file PATH; returns PATH.
function ns.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function ns.tmpdir()
  local ok, out = ns.sh("mktemp -d /tmp/netbe-test.XXXXXX")
  assert(ok, "mktemp failed: " .. out)
  local dir = out:gsub("%s+$", "")
  owned.dirs[#owned.dirs + 1] = dir
  return dir
end

local function spawn(prefix, cmd)
  local dir = owned.dirs[1] or ns.tmpdir()
  serial = serial + 1
  local log = dir .. "/spawn" .. serial .. ".log"
  local ok, out = ns.sh(prefix .. "setsid sh -c " .. ns.quote(cmd) ..
    " >" .. ns.quote(log) .. " 2>&1 </dev/null & echo $!")
  local pid = tonumber(out:match("(%d+)%s*$"))
  assert(ok and pid, "spawn failed: " .. out)
  owned.pids[#owned.pids + 1] = pid
  return pid, log
end

-- Start CMD in the background on the host; returns pid, log file.
function ns.spawn(cmd) return spawn("", cmd) end

-- True while PID runs. A zombie counts as gone: nothing here reaps the
-- processes spawned through a shell that has exited.
function ns.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= nil and state ~= "Z"
end

-- dash's kill builtin cannot signal a process group; procps' can.
local function signal_session(pid, signal)
  ns.sh("/bin/kill -s " .. signal .. " -- -" .. pid .. " " .. pid .. " 2>/dev/null")
end

-- Stop a process we started (its whole session): SIGTERM, then SIGKILL.
function ns.kill(pid, signal)
  signal_session(pid, signal or "TERM")
  for _ = 1, 30 do
    if not ns.alive(pid) then return true end
    ns.sh("sleep 0.1")
  end
  signal_session(pid, "KILL")
  return not ns.alive(pid)
end

-- Wait until FN returns truthy (or the shell command FN succeeds).
function ns.wait_for(fn, timeout)
  local check = type(fn) == "function" and fn or function() return (ns.sh(fn)) end
  for _ = 1, math.ceil((timeout or 5) * 10) do
    if check() then return true end
    ns.sh("sleep 0.1")
  end
  return check() and true or false
end

function ns.own_link(ifname)
  owned.links[#owned.links + 1] = ifname
end

local Ns = {}
Ns.__index = Ns

function Ns:exec(cmd)
  return ns.sh("ip netns exec " .. self.name .. " sh -c " .. ns.quote(cmd))
end

function Ns:spawn(cmd)
  return spawn("ip netns exec " .. self.name .. " ", cmd)
end

-- A new namespace with lo up.
function ns.new(tagname)
  local name = ns.unique(tagname or "ns")
  local ok, out = ns.sh("ip netns add " .. name .. " && ip -n " .. name .. " link set lo up")
  assert(ok, "ip netns add " .. name .. ": " .. out)
  owned.namespaces[#owned.namespaces + 1] = name
  return setmetatable({name = name}, Ns)
end

function ns.cleanup()
  for i = #owned.pids, 1, -1 do
    if ns.alive(owned.pids[i]) then ns.kill(owned.pids[i]) end
  end
  for _, l in ipairs(owned.links) do ns.sh("ip link del " .. l .. " 2>/dev/null") end
  for _, n in ipairs(owned.namespaces) do ns.sh("ip netns del " .. n) end
  for _, d in ipairs(owned.dirs) do ns.sh("rm -rf " .. ns.quote(d)) end
  owned = {namespaces = {}, links = {}, pids = {}, dirs = {}}
end

-- nil when the tests can run, else why not (for pending()).
function ns.skip_unless_root(...)
  local ok, uid = ns.sh("id -u")
  if not ok or uid:match("%d+") ~= "0" then return "needs root" end
  if not ns.sh("ip netns list") then return "ip netns unavailable" end
  for _, cmd in ipairs({...}) do
    if not ns.sh("command -v " .. cmd) then return "needs " .. cmd end
  end
  return nil
end

return ns
