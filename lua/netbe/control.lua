-- netbe.control: the control socket of `netbe wire` and `netbe serve`.
-- A request is one line of JSON, {"execute": COMMAND, "arguments": {...}},
-- as slirp4netns's API socket and QMP take them; the answer is one line,
-- {"return": VALUE} or {"error": {"desc": MESSAGE}}. slirp4netns's own
-- commands (add_hostfwd, list_hostfwd, remove_hostfwd) take and give its
-- exact shapes, so its clients (rootlesskit) work unchanged. README,
-- "Control socket", lists every command and shape.
local json = require("dkjson")
local netbe = require("netbe")
local serve = require("netbe.serve")

local control = {}

control.MAX_REQUEST = 65536   -- bytes in one request line (netbe_lua.c's LB_CTL_REQUEST)

local function err(fmt, ...)
  return { error = { desc = netbe.one_line(string.format(fmt, ...)) } }
end

-- The NIC a request names in arguments.nic (none: the only NIC).
local function nic_of(set, args)
  return set:get(args.nic)
end

-- An integer argument in LO..HI, or nil.
local function int_arg(v, lo, hi)
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < lo or v > hi then return nil end
  return v
end

-- ---- slirp4netns's shapes ----

local IPV4 = "^%d+%.%d+%.%d+%.%d+$"

-- The netbe rule for slirp4netns's add_hostfwd arguments, or nil and the
-- desc slirp4netns gives for the field that is wrong.
local function s4n_rule(args)
  local proto = args.proto
  if proto ~= "tcp" and proto ~= "udp" then return nil, "bad arguments.proto" end
  local haddr = args.host_addr
  if haddr == nil or haddr == "" then haddr = "0.0.0.0" end
  if type(haddr) ~= "string" or not haddr:match(IPV4) then return nil, "bad arguments.host_addr" end
  local hport = int_arg(args.host_port, 1, 65535)
  if not hport then return nil, "bad arguments.host_port" end
  local gaddr = args.guest_addr
  if gaddr == nil then gaddr = "" end
  if type(gaddr) ~= "string" or not (gaddr == "" or gaddr:match(IPV4)) then
    return nil, "bad arguments.guest_addr"
  end
  local gport = int_arg(args.guest_port, 1, 65535)
  if not gport then return nil, "bad arguments.guest_port" end
  return string.format("%s:%s:%d-%s:%d", proto, haddr, hport, gaddr, gport)
end

-- A normal-form rule as slirp4netns's list entry fields.
local function s4n_entry(id, rule)
  local proto, haddr, hport, gaddr, gport = rule:match("^(%a+):(.*):(%d+)%-(.*):(%d+)$")
  if not proto then   -- unix:/PATH-GADDR:GPORT
    proto, haddr, gaddr, gport = rule:match("^(unix):(.*)%-(.*):(%d+)$")
    hport = 0
  end
  return { id = id, proto = proto, host_addr = haddr, host_port = tonumber(hport),
           guest_addr = gaddr, guest_port = tonumber(gport) }
end

-- ---- Commands: each takes (set, arguments) and returns an answer table ----

local C = {}

function C.version()
  return { ["return"] = { version = netbe.VERSION } }
end

function C.stats(set, args)
  if args.nic ~= nil then
    local nic, e = nic_of(set, args)
    if not nic then return err("stats: %s", e) end
    return { ["return"] = { nics = { serve.stats(nic) } } }
  end
  return { ["return"] = { nics = set:all_stats() } }
end

function C.features(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("features: %s", e) end
  if nic.down then return err("features: NIC '%s' is down: %s", nic.name, nic.down) end
  local function side(be)
    return { name = be:name(), offered = serve.feature_names(be:get_cap()),
             negotiated = serve.feature_names(be:features()), hdr_len = be:hdr_len() }
  end
  return { ["return"] = { nic = nic.name, a = side(nic.a), b = side(nic.b) } }
end

function C.link(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("link: %s", e) end
  if nic.down then return err("link: NIC '%s' is down: %s", nic.name, nic.down) end
  if args.state ~= nil and args.state ~= "up" and args.state ~= "down" then
    return err("link: state: expected \"up\" or \"down\", got %s", json.encode(args.state))
  end
  if args.state then nic.wire:set_link(args.state == "up") end
  local ws = nic.wire:stats()
  return { ["return"] = { nic = nic.name, link = ws.link_up and "up" or "down",
                          link_drops_to_guest = ws.link_drops_to_guest,
                          link_drops_from_guest = ws.link_drops_from_guest } }
end

function C.policy_load(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("policy_load: %s", e) end
  local n, e2 = set:policy_load(nic, args.path)
  if not n then return err("policy_load: %s", e2) end
  return { ["return"] = { nic = nic.name, path = nic.policy_path, rules = n } }
end

function C.policy_stats(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("policy_stats: %s", e) end
  local st = serve.policy_stats(nic)
  if not st then return err("policy_stats: NIC '%s' has no policy", nic.name) end
  return { ["return"] = st }
end

function C.hostfwd_add(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("hostfwd_add: %s", e) end
  local id, e2 = serve.hostfwd_add(nic, args.rule)
  if not id then return err("hostfwd_add: %s", e2) end
  return { ["return"] = { id = id } }
end

function C.hostfwd_list(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("hostfwd_list: %s", e) end
  local list, e2 = serve.hostfwd_list(nic)
  if not list then return err("hostfwd_list: %s", e2) end
  local entries = {}
  for i, f in ipairs(list) do
    entries[i] = s4n_entry(f.id, f.rule)
    entries[i].rule = f.rule
  end
  return { ["return"] = { entries = setmetatable(entries, { __jsontype = "array" }) } }
end

function C.hostfwd_remove(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("hostfwd_remove: %s", e) end
  local id = args.id
  if id ~= nil then
    id = int_arg(id, 1, math.maxinteger)
    if not id then return err("hostfwd_remove: id: expected a forward's id, a positive integer") end
  end
  local ok, e2 = serve.hostfwd_remove(nic, id, args.rule)
  if not ok then return err("hostfwd_remove: %s", e2) end
  return { ["return"] = setmetatable({}, { __jsontype = "object" }) }
end

-- slirp4netns's three, with its argument names and its error texts.
C.add_hostfwd = function(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("bad request: add_hostfwd: %s", e) end
  local rule, why = s4n_rule(args)
  if not rule then return err("bad request: add_hostfwd: %s", why) end
  local id, e2 = serve.hostfwd_add(nic, rule)
  if not id then return err("bad request: add_hostfwd: %s", e2) end
  return { ["return"] = { id = id } }
end

C.list_hostfwd = function(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("bad request: list_hostfwd: %s", e) end
  local list, e2 = serve.hostfwd_list(nic)
  if not list then return err("bad request: list_hostfwd: %s", e2) end
  local entries = {}
  for i, f in ipairs(list) do entries[i] = s4n_entry(f.id, f.rule) end
  return { ["return"] = { entries = setmetatable(entries, { __jsontype = "array" }) } }
end

C.remove_hostfwd = function(set, args)
  local nic, e = nic_of(set, args)
  if not nic then return err("bad request: remove_hostfwd: %s", e) end
  local id = int_arg(args.id, 1, math.maxinteger)
  if not id or not serve.hostfwd_remove(nic, id) then
    return err("bad request: remove_hostfwd: bad arguments.id")
  end
  return { ["return"] = setmetatable({}, { __jsontype = "object" }) }
end

function C.nic_add(set, args)
  if not set.may_add then return err("nic_add: this process runs one NIC (use netbe serve)") end
  if args.policy ~= nil then
    local ok, e = set:policy_path_ok(args.policy)
    if not ok then return err("nic_add: %s", e) end
  end
  local nic, e = set:add(args.name, args.a, args.b, { policy = args.policy })
  if not nic then return err("nic_add: %s", e) end
  return { ["return"] = { nic = nic.name } }
end

function C.nic_remove(set, args)
  if not set.may_add then return err("nic_remove: this process runs one NIC (use netbe serve)") end
  if args.name == nil then return err("nic_remove: name: expected the NIC's name") end
  local ok, e = set:remove(args.name)
  if not ok then return err("nic_remove: %s", e) end
  return { ["return"] = setmetatable({}, { __jsontype = "object" }) }
end

function C.metrics(set)
  return { ["return"] = { text = control.metrics(set) } }
end

local COMMANDS = {}
for name in pairs(C) do COMMANDS[#COMMANDS + 1] = name end
table.sort(COMMANDS)

-- The answer table to one request line LINE.
function control.answer(set, line)
  local ok, req, _, perr = pcall(json.decode, line, 1, json.null)
  if not ok then req, perr = nil, tostring(req) end
  local array = type(req) == "table" and (getmetatable(req) or {}).__jsontype == "array"
  if perr or type(req) ~= "table" or array then
    return err("bad request: cannot parse JSON%s", perr and (": " .. perr) or ": expected an object")
  end
  if type(req.execute) ~= "string" then return err("bad request: no execute found") end
  local args = req.arguments
  if args == nil or args == json.null then args = {} end
  if type(args) ~= "table" then return err("bad request: arguments: expected an object") end
  local fn = C[req.execute]
  if not fn then
    return err("bad request: unknown execute '%s' (expected one of %s)", req.execute,
               table.concat(COMMANDS, ", "))
  end
  for k, v in pairs(args) do
    if v == json.null then args[k] = nil end
  end
  local ok, ans = pcall(fn, set, args)
  if not ok then return err("%s: %s", req.execute, tostring(ans)) end
  return ans
end

-- One answer line (without the newline) for LINE, or for a request that
-- could not be read, WHY.
function control.handle(set, line, why)
  local ans = line and control.answer(set, line) or err("bad request: %s", why)
  return json.encode(ans)
end

-- Serve SET's control socket at PATH with MODE (an integer, 0600 by
-- default) -> listener, or nil and why.
function control.listen(set, path, mode)
  return netbe.control_listen(path, mode or 384, function(line, why)
    return control.handle(set, line, why)
  end)
end

-- Parse a --control value, "unix:PATH" -> PATH, or nil and why.
function control.address(value)
  local path = value:match("^unix:(/.+)$") or value:match("^unix:(.+)$")
  if not path then return nil, "--control: expected unix:PATH, got '" .. value .. "'" end
  return path
end

-- Parse a --control-mode value ("0660", "660") -> integer, or nil and why.
function control.mode(value)
  local m = value and value:match("^0?[0-7][0-7][0-7]$") and tonumber(value, 8)
  if not m then return nil, "--control-mode: expected an octal mode like 0600, got '"
    .. tostring(value) .. "'" end
  return m
end

-- ---- Metrics: Prometheus text exposition, version 0.0.4 ----

local function label(v)
  return '"' .. tostring(v):gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n") .. '"'
end

local function labels(t)
  local parts = {}
  for _, kv in ipairs(t) do parts[#parts + 1] = kv[1] .. "=" .. label(kv[2]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Every counter of SET as one exposition text.
function control.metrics(set)
  local families, order = {}, {}
  -- A counter's family is named with its _total, as 0.0.4 parsers expect.
  local function sample(name, help, typ, lbls, value)
    if typ == "counter" then name = name .. "_total" end
    local f = families[name]
    if not f then
      f = { help = help, type = typ, lines = {} }
      families[name] = f
      order[#order + 1] = name
    end
    f.lines[#f.lines + 1] = "netbe_" .. name .. labels(lbls) .. " " .. string.format("%d", value)
  end
  for _, st in ipairs(set:all_stats()) do
    local nic = { "nic", st.name }
    sample("nic_up", "1 while the NIC runs, 0 once a side went down", "gauge", { nic },
           st.state == "up" and 1 or 0)
    sample("link_up", "1 while the NIC's link is up (see the link command)", "gauge", { nic },
           st.link == "up" and 1 or 0)
    for _, side in ipairs({ "a", "b" }) do
      local s = st[side]
      if s then
        for _, c in ipairs(serve.COUNTERS) do
          sample(c, "backend counter " .. c, "counter",
                 { nic, { "side", side }, { "backend", s.name } }, s.counters[c])
        end
      end
    end
    if st.wire then
      sample("wire_drops", "frames the other side refused", "counter", { nic }, st.wire.drops)
      sample("link_drops", "frames dropped while the link was down", "counter",
             { nic, { "dir", "to_guest" } }, st.wire.link_drops_to_guest)
      sample("link_drops", "frames dropped while the link was down", "counter",
             { nic, { "dir", "from_guest" } }, st.wire.link_drops_from_guest)
    end
    local p = st.policy
    if p then
      for _, dir in ipairs({ "to_guest", "from_guest" }) do
        for _, k in ipairs({ "pass_frames", "pass_bytes", "drop_frames", "drop_bytes" }) do
          sample("policy_" .. k, "policy verdicts", "counter",
                 { nic, { "dir", dir } }, p[dir][k])
        end
      end
      sample("policy_hook_errors", "hooks that failed or ran away", "counter", { nic },
             p.hook_errors)
      sample("policy_reloads", "policy swaps", "counter", { nic }, p.reloads)
      for _, r in ipairs(p.rules) do
        for _, k in ipairs({ "hits", "bytes", "drops" }) do
          sample("policy_rule_" .. k, "frames matching a rule", "counter",
                 { nic, { "rule", r.name } }, r[k])
        end
      end
    end
  end
  local out = {}
  for _, name in ipairs(order) do
    local f = families[name]
    out[#out + 1] = "# HELP netbe_" .. name .. " " .. f.help
    out[#out + 1] = "# TYPE netbe_" .. name .. " " .. f.type
    for _, l in ipairs(f.lines) do out[#out + 1] = l end
  end
  return table.concat(out, "\n") .. (#out > 0 and "\n" or "")
end

-- ---- The client ----

-- Send one request {execute = CMD, arguments = ARGS} to the socket at
-- PATH -> the decoded answer, or nil and why.
function control.call(path, cmd, args, timeout)
  local req = { execute = cmd }
  if args and next(args) then req.arguments = args end
  local text, e = netbe.control_call(path, json.encode(req) .. "\n", timeout)
  if not text then return nil, e end
  local ans, _, perr = json.decode(text)
  if type(ans) ~= "table" then
    return nil, string.format("%s: not a JSON answer%s: %s", path, perr and " (" .. perr .. ")" or "",
                              netbe.one_line(text:sub(1, 200)))
  end
  return ans, text
end

return control
