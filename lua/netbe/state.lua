-- netbe.state: what the tool made, per topology, so destroy removes only that.
--
-- The state of topology NAME lives in DIR/NAME.state (a Lua table literal,
-- rewritten after every step so a crash loses at most the step in flight)
-- and the files the tool writes for it (dnsmasq and firewall configs, pid
-- and lease files) in DIR/NAME/. DIR is $NETBE_STATE_DIR, else /var/lib/netbe.
local state = {}
local shquote = require("netbe.plan").shquote

-- Makes the state directory if it is missing.
local function ensure_dir()
  os.execute("mkdir -p " .. shquote(state.dir()))
end

function state.dir()
  local d = os.getenv("NETBE_STATE_DIR")
  if d and d ~= "" then return d end
  return "/var/lib/netbe"
end

function state.path(name) return state.dir() .. "/" .. name .. ".state" end
function state.files(name) return state.dir() .. "/" .. name end

local function serialize(v, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t ~= "table" then error("state: cannot store a " .. t) end
  local parts = {}
  local inner = indent .. "  "
  local n = #v
  for i = 1, n do parts[#parts + 1] = inner .. serialize(v[i], inner) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = inner .. "[" .. string.format("%q", k) .. "] = " .. serialize(v[k], inner)
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

-- The table a state file at PATH returns; nil when there is no file; nil
-- and an error when it is corrupt.
local function read_table(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local chunk, err = load(text, "@" .. path, "t", {})
  if not chunk then return nil, path .. ": corrupt state file: " .. err end
  local ok, t = pcall(chunk)
  if not ok or type(t) ~= "table" then return nil, path .. ": corrupt state file: expected a table" end
  return t
end

-- Writes T to PATH atomically (a temporary file, then rename), under the
-- comment line HEADER.
local function write_table(path, header, t)
  ensure_dir()
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then error("cannot write the state file " .. tmp .. ": " .. err, 0) end
  f:write("-- ", header, "\n", "return ", serialize(t, ""), "\n")
  f:close()
  assert(os.rename(tmp, path))
end

-- The recorded state of NAME: { name, os, made = { records } }, a fresh one
-- when nothing is recorded, or nil and an error for an unreadable file.
function state.load(name)
  local path = state.path(name)
  local st, err = read_table(path)
  if err then return nil, err end
  if not st then return { name = name, made = {} } end
  if type(st.made) ~= "table" then
    return nil, path .. ": corrupt state file: expected a table with 'made'"
  end
  return st
end

-- Writes ST atomically.
function state.save(st)
  write_table(state.path(st.name), "netbe topology state: what netbe made for '" .. st.name
              .. "'. Written by netbe.", st)
end

-- Host settings several topologies share (IPv4 forwarding) live in
-- DIR/host.state: for each, the value before netbe first changed it and the
-- topologies that need it now. DIR/host.lock (flock) serializes every netbe
-- process that reads or changes them. Calls FN(settings) under the lock and
-- writes back what FN left in the table; returns what FN returns. A host
-- state file netbe cannot read raises an error.
function state.host(fn)
  ensure_dir()
  local lock <close>, lerr = require("netbe").lock(state.dir() .. "/host.lock")
  if not lock then error(lerr, 0) end
  local path = state.dir() .. "/host.state"
  local settings, err = read_table(path)
  if err then error(err, 0) end
  settings = settings or {}
  local res = table.pack(fn(settings))
  if next(settings) then
    write_table(path, "netbe host settings shared by topologies. Written by netbe.", settings)
  else
    os.remove(path)
  end
  return table.unpack(res, 1, res.n)
end

local function self_pid()
  local p = io.popen("echo $PPID")
  local pid = p:read("n")
  p:close()
  return pid
end

local function alive(pid)
  return os.execute("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") == true
end

-- Takes the topology's lock (a directory holding the owner's pid), so two
-- netbe runs never apply or destroy one topology at once. A lock left by a
-- process that no longer runs is taken over. Returns an unlock function,
-- or nil and who holds it.
function state.lock(name)
  ensure_dir()
  local dir = state.dir() .. "/" .. name .. ".lock"
  local q = shquote(dir)
  for _ = 1, 2 do
    if os.execute("mkdir " .. q .. " 2>/dev/null") == true then
      local f = io.open(dir .. "/pid", "w")
      if f then f:write(self_pid(), "\n"); f:close() end
      return function() os.execute("rm -rf " .. q) end
    end
    local f = io.open(dir .. "/pid")
    local pid = f and f:read("n")
    if f then f:close() end
    if pid and alive(pid) then
      return nil, string.format("topology %s is busy: netbe process %d holds %s", name, pid, dir)
    end
    if not pid then
      return nil, string.format("topology %s is locked by %s (no pid inside; remove it if no netbe runs)", name, dir)
    end
    os.execute("rm -rf " .. q)
  end
  return nil, "cannot take the lock " .. dir
end

-- Removes the state file and the topology's files directory.
function state.remove(name)
  os.remove(state.path(name))
  os.execute("rm -rf " .. shquote(state.files(name)))
end

return state
