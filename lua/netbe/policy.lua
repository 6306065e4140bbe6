-- netbe.policy: the rule language. A policy file is Lua run in a sandbox
-- of its own (netbe.run_file); it calls settings{...} once and rule{...}
-- once per rule, in match order (or returns {default=, fail=, rules={...}}).
-- What it made comes back as plain data; every rule is checked here, in
-- netbe's own state, and turned into the normalized table netbe.policy_new
-- builds the C ruleset from. A hook written as a function comes back as
-- its source text and captured values and is compiled again in a sandbox
-- of its own. Errors read "FILE:LINE: rule 'NAME': what is wrong (what was
-- expected)"; a policy that fails leaves the one in force alone.
local netbe = require("netbe")

local policy = {}

-- The match fields are netbe's (netbe.policy_fields, from netbe.c's table,
-- in bit order): each has a name, a kind (how it is written here), the
-- largest number it takes, names of values, and the members of the
-- normalized rule it fills. A rule's other keys are these.
local MATCH = netbe.policy_fields
local FIELDS = { "name" }
for _, f in ipairs(MATCH) do FIELDS[#FIELDS + 1] = f.name end
for _, k in ipairs({ "action", "rate", "burst", "hook" }) do FIELDS[#FIELDS + 1] = k end
local FIELD_SET = {}
for _, f in ipairs(FIELDS) do FIELD_SET[f] = true end
local SETTINGS = { default = true, fail = true, hook_budget = true, hook_memory = true,
                   hook_time = true }

local ACTIONS = { pass = 0, drop = 1, count = 2, rate = 3, lua = 4 }

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, ", ")
end

-- V as Lua source text on one line.
local function literal(v)
  if type(v) ~= "table" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = "[" .. literal(k) .. "]=" .. literal(x) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- A named value: NAMES[v] or an integer in 0..MAX.
local function enum(v, names, max, what)
  if math.type(v) == "integer" and v >= 0 and v <= max then return v end
  if type(v) == "string" and names[v:lower()] then return names[v:lower()] end
  error(string.format("%s %s: expected one of %s, or a number 0-%d", what,
                      literal(tostring(v)), keys_of(names), max), 0)
end

local function parse_mac(s, what)
  local b = { tostring(s):match("^(%x%x):(%x%x):(%x%x):(%x%x):(%x%x):(%x%x)$") }
  if #b ~= 6 then error(string.format("%s '%s': expected xx:xx:xx:xx:xx:xx", what, s), 0) end
  for i = 1, 6 do b[i] = tonumber(b[i], 16) end
  return string.char(table.unpack(b))
end

-- "MAC" or "MAC/MASK" (MASK a MAC or a bit count 0-48) -> bytes, mask bytes.
local function parse_mac_masked(v, what)
  if type(v) ~= "string" then error(what .. ": expected a MAC string", 0) end
  local addr, mask = v:match("^([^/]+)/(.+)$")
  if not addr then return parse_mac(v, what), string.rep("\255", 6) end
  local n = tonumber(mask)
  if n then
    if n ~= math.floor(n) or n < 0 or n > 48 then
      error(string.format("%s '%s': mask length must be 0-48", what, v), 0)
    end
    local m = {}
    for i = 1, 6 do
      local bits = math.max(0, math.min(8, n - (i - 1) * 8))
      m[i] = (0xff << (8 - bits)) & 0xff
    end
    return parse_mac(addr, what), string.char(table.unpack(m))
  end
  return parse_mac(addr, what), parse_mac(mask, what .. " mask")
end

local function parse_ip4(s)
  local o = { s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #o ~= 4 then return nil end
  for i = 1, 4 do
    o[i] = tonumber(o[i])
    if o[i] > 255 then return nil end
  end
  return string.char(table.unpack(o))
end

local function parse_ip6(s)
  if not s:match("^[%x:]+$") or s:find(":::", 1, true) then return nil end
  local head, tail = s:match("^(.-)::(.*)$")
  local function groups(part)
    local g = {}
    if part == "" then return g end
    for h in (part .. ":"):gmatch("([^:]*):") do
      if #h < 1 or #h > 4 then return nil end
      g[#g + 1] = tonumber(h, 16)
    end
    return g
  end
  local all
  if head then
    local a, b = groups(head), groups(tail)
    if not a or not b or #a + #b > 7 then return nil end
    all = a
    for _ = 1, 8 - #a - #b do all[#all + 1] = 0 end
    for _, x in ipairs(b) do all[#all + 1] = x end
  else
    all = groups(s)
    if not all or #all ~= 8 then return nil end
  end
  local out = {}
  for _, x in ipairs(all) do out[#out + 1] = string.pack(">I2", x) end
  return table.concat(out)
end

-- "A.B.C.D[/N]" or "IPV6[/N]" -> family, bytes, prefix length. Host bits
-- beyond the prefix are an error: they usually mean a typo.
local function parse_prefix(v, what)
  if type(v) ~= "string" then error(what .. ": expected an address string", 0) end
  local addr, plen = v:match("^([^/]+)/(%d+)$")
  addr = addr or v
  local fam, bytes, max = 4, parse_ip4(addr), 32
  if not bytes then fam, bytes, max = 6, parse_ip6(addr), 128 end
  if not bytes then
    error(string.format("%s '%s': bad address (expected A.B.C.D[/0-32] or an IPv6 " ..
                        "address[/0-128])", what, v), 0)
  end
  plen = plen and tonumber(plen) or max
  if plen > max then
    error(string.format("%s '%s': prefix length %d is over %d", what, v, plen, max), 0)
  end
  for i = 1, #bytes do
    local bits = math.max(0, math.min(8, plen - (i - 1) * 8))
    local host = bytes:byte(i) & (0xff >> bits)
    if host ~= 0 then
      error(string.format("%s '%s': bits set beyond the /%d prefix (expected the " ..
                          "network address)", what, v, plen), 0)
    end
  end
  return fam, bytes, plen
end

-- 80, {lo, hi}, "lo-hi" -> lo, hi within 0..MAX.
local function parse_range(v, max, what)
  local lo, hi
  if math.type(v) == "integer" then lo, hi = v, v
  elseif type(v) == "table" then lo, hi = v[1], v[2]
  elseif type(v) == "string" then
    lo, hi = v:match("^(%d+)%-(%d+)$")
    if not lo then lo = v:match("^%d+$"); hi = lo end
    lo, hi = math.tointeger(tonumber(lo)), math.tointeger(tonumber(hi))
  end
  if math.type(lo) ~= "integer" or math.type(hi) ~= "integer" or lo < 0 or hi > max
     or lo > hi then
    error(string.format("%s %s: expected a number, {low, high} or \"low-high\" " ..
                        "within 0-%d, low <= high", what,
                        type(v) == "string" and ("'" .. v .. "'") or tostring(v), max), 0)
  end
  return lo, hi
end

-- "syn,!ack" -> flags, mask, for field F of kind FLAGS.
local function parse_flags(v, f)
  if type(v) ~= "string" then
    error(string.format("%s: expected a string of flags (%s), ! to require one clear", f.name,
                        keys_of(f.names)), 0)
  end
  local flags, mask = 0, 0
  for neg, name in v:gmatch("(!?)(%a+)") do
    local bit = f.names[name:lower()]
    if not bit then
      error(string.format("%s '%s': unknown flag '%s' (expected %s, ! to " ..
                          "require it clear)", f.name, v, name, keys_of(f.names)), 0)
    end
    mask = mask | bit
    if neg == "" then flags = flags | bit end
  end
  if mask == 0 then error(string.format("%s '%s': no flags named", f.name, v), 0) end
  return flags, mask
end

local RATE_UNITS = { bit = { 0, 1 }, kbit = { 0, 1e3 }, mbit = { 0, 1e6 }, gbit = { 0, 1e9 },
                     pps = { 1, 1 }, kpps = { 1, 1e3 } }
local BURST_UNITS = { b = 8, kb = 8 * 1024, mb = 8 * 1024 * 1024, bit = 1, kbit = 1e3,
                      mbit = 1e6 }

local function parse_rate(v)
  local n, unit = tostring(v):match("^([%d.]+)%s*(%a+)$")
  local u = unit and RATE_UNITS[unit:lower()]
  n = tonumber(n)
  if not u or not n or n <= 0 then
    error(string.format("rate '%s': expected a positive number with a unit: %s", tostring(v),
                        keys_of(RATE_UNITS)), 0)
  end
  return u[1], n * u[2]
end

local function parse_burst(v, unit)
  if unit == 1 then
    if type(v) == "number" and v >= 1 then return v end
    error(string.format("burst %s: a frames-per-second rate wants a number of frames >= 1",
                        tostring(v)), 0)
  end
  local n, u = tostring(v):match("^([%d.]+)%s*(%a+)$")
  local mult = u and BURST_UNITS[u:lower()]
  n = tonumber(n)
  if not mult or not n or n <= 0 then
    error(string.format("burst '%s': expected a size: a number with one of %s", tostring(v),
                        keys_of(BURST_UNITS)), 0)
  end
  return n * mult
end

-- The hook H as the chunk netbe.policy_new compiles and its chunk name. H is Lua source text that returns the hook, a description
-- of a function (netbe.run_file and netbe.hook_source make them: its
-- source, first line and captured values), or a function of this state.
-- The chunk declares the captured values, then returns the function from
-- the line it was on, so that messages name the file's own lines.
local function hook_chunk(h)
  if type(h) == "function" then
    local d, e = netbe.hook_source(h)
    if not d then error(e, 0) end
    h = d
  end
  if type(h) == "string" then return h, "=hook" end
  if type(h) ~= "table" or type(h.source) ~= "string" or math.type(h.line) ~= "integer"
     or h.line < 1 or h.line > 1e7 or type(h.upvalues) ~= "table" then
    error("hook: expected a function(pkt), or Lua source text that returns one", 0)
  end
  local names, values = {}, {}
  for _, u in ipairs(h.upvalues) do
    if type(u.name) ~= "string" or not u.name:match("^[%a_][%w_]*$") then
      error("hook: a captured value without a name", 0)
    end
    if not u.env then names[#names + 1], values[#values + 1] = u.name, literal(u.value) end
  end
  local head = #names == 0 and "return " or
               ("local " .. table.concat(names, ", ") .. " = " .. table.concat(values, ", ") ..
                "; return ")
  return head .. string.rep("\n", h.line - 1) .. h.source, h.name
end

-- NAMES' names, ordered by value: "a or b", "a, b or c".
local function by_value(names)
  local ks = {}
  for k in pairs(names) do ks[#ks + 1] = k end
  table.sort(ks, function(x, y) return names[x] < names[y] end)
  return #ks < 2 and (ks[1] or "") or table.concat(ks, ", ", 1, #ks - 1) .. " or " .. ks[#ks]
end

-- How each kind of field is written: value V of field F -> the values of
-- F's members, in their order.
local KINDS = {}
function KINDS.NAME(v, f)
  local x = f.names[v]
  if x == nil then
    error(string.format("%s %s: expected %s", f.name, literal(tostring(v)), by_value(f.names)), 0)
  end
  return x
end
function KINDS.ENUM(v, f) return enum(v, f.names, f.max, f.name) end
-- A number, or a name exactly as written ("none").
function KINDS.TAG(v, f)
  if f.names[v] then return f.names[v] end
  local quoted = {}
  for k in pairs(f.names) do quoted[#quoted + 1] = literal(k) end
  table.sort(quoted)
  return enum(v, {}, f.max, string.format("%s (or %s)", f.name, table.concat(quoted, ", ")))
end
function KINDS.RANGE(v, f) return parse_range(v, f.max, f.name) end
KINDS.FLAGS = parse_flags
function KINDS.MAC(v, f) return parse_mac_masked(v, f.name) end
function KINDS.PREFIX(v, f) return parse_prefix(v, f.name) end

-- Check rule R (the I-th) and return its normalized form.
local function normalize_rule(r, i)
  if type(r) ~= "table" then error("expected a table", 0) end
  for k in pairs(r) do
    if not FIELD_SET[k] then
      error(string.format("unknown field '%s' (expected one of: %s)", tostring(k),
                          table.concat(FIELDS, ", ")), 0)
    end
  end
  local n = { name = r.name or ("rule" .. i) }
  if type(n.name) ~= "string" or not n.name:match("^[%w_.:-]+$") or #n.name > 63 then
    error(string.format("name %s: expected 1-63 letters, digits or _ . : -",
                        literal(tostring(n.name))), 0)
  end
  local set_by = {}
  for _, f in ipairs(MATCH) do
    if r[f.name] ~= nil then
      local vals = { KINDS[f.kind](r[f.name], f) }
      for k, m in ipairs(f.members) do
        -- The one member two fields share is the address family of src_ip and dst_ip.
        if n[m] ~= nil and n[m] ~= vals[k] then
          error(string.format("%s and %s must be of one family (both IPv4 or both IPv6)",
                              set_by[m], f.name), 0)
        end
        n[m], set_by[m] = vals[k], f.name
      end
    end
  end
  local fam = n.ip_family
  if fam and n.ethertype and not (fam == 4 and (n.ethertype == 0x0800 or n.ethertype == 0x0806)
                                  or fam == 6 and n.ethertype == 0x86dd) then
    error(string.format("an IPv%d address cannot match ethertype 0x%04x", fam, n.ethertype), 0)
  end
  if (r.sport ~= nil or r.dport ~= nil) and n.proto and not netbe.proto_has_ports(n.proto) then
    error(string.format("ports need proto tcp, udp, sctp or udplite, not %d", n.proto), 0)
  end
  local action = r.action or "pass"
  n.action = ACTIONS[action]
  if not n.action then
    error(string.format("action %s: expected one of %s", literal(tostring(action)),
                        keys_of(ACTIONS)), 0)
  end
  if action == "rate" then
    if r.rate == nil then error("action rate needs rate = e.g. '10mbit' or '1000pps'", 0) end
    n.rate_unit, n.rate = parse_rate(r.rate)
    n.burst = r.burst ~= nil and parse_burst(r.burst, n.rate_unit)
              or math.max(n.rate / 10, n.rate_unit == 0 and 2 * 1518 * 8 or 1)
  elseif r.rate ~= nil or r.burst ~= nil then
    error("rate and burst belong to action rate", 0)
  end
  if action == "lua" then
    n.hook, n.hook_name = hook_chunk(r.hook)
  elseif r.hook ~= nil then
    error("hook belongs to action lua", 0)
  end
  return n
end

local VERDICTS = { pass = 0, drop = 1 }
local FAIL = { open = 0, closed = 1, pass = 0, drop = 1 }

local MEMORY_UNITS = { [""] = 1, b = 1, kb = 1024, mb = 1024 * 1024 }
local TIME_UNITS = { s = 1e9, ms = 1e6, us = 1e3 }

-- hook_memory: bytes, or "N kb" / "N mb" -> bytes, 64 KiB to 64 MiB.
local function memory_bytes(v)
  local n, unit = v, ""
  if type(v) == "string" then n, unit = v:match("^(%d+)%s*(%a*)$") end
  local mult = unit and MEMORY_UNITS[unit:lower()]
  n = math.tointeger(tonumber(n))
  if not mult or not n or n < 1 or n > (64 << 20) // mult or n * mult < (64 << 10) then
    error(string.format("hook_memory %s: expected 64 kb to 64 mb (a number of bytes, or " ..
                        "N kb, N mb)", literal(v)), 0)
  end
  return n * mult
end

-- hook_time: seconds, or "N ms" / "N us" / "N s" -> nanoseconds, 10 us to 1 s.
local function time_ns(v)
  local n, unit = v, "s"
  if type(v) == "string" then n, unit = v:match("^(%d*%.?%d+)%s*(%a+)$") end
  local mult = unit and TIME_UNITS[unit:lower()]
  n = tonumber(n)
  local ns = mult and n and n * mult
  if not ns or ns ~= ns or ns < 1e4 or ns > 1e9 then
    error(string.format("hook_time %s: expected 10 us to 1 s (seconds, or N ms, N us)",
                        literal(v)), 0)
  end
  return math.floor(ns + 0.5)
end

-- Normalize SPEC = {default=, fail=, hook_budget=, hook_memory=, hook_time=,
-- rules={...}}.
-- WHERE(rule, i) names a rule's place for messages.
local function normalize(spec, where)
  local d = { rules = {} }
  for k in pairs(spec) do
    if k ~= "rules" and not SETTINGS[k] then
      error(string.format("%s: unknown setting '%s' (expected one of: %s)", where(nil),
                          tostring(k), keys_of(SETTINGS)), 0)
    end
  end
  local ok, e = pcall(function()
    d.default = VERDICTS[spec.default or "pass"]
    if not d.default then
      error(string.format("default %s: expected pass or drop", literal(tostring(spec.default))),
            0)
    end
    d.fail = FAIL[spec.fail or "closed"]
    if not d.fail then
      error(string.format("fail %s: expected open or closed", literal(tostring(spec.fail))), 0)
    end
    if spec.hook_budget ~= nil then
      d.hook_budget = math.tointeger(spec.hook_budget)
      if not d.hook_budget or d.hook_budget < 100 or d.hook_budget > 1e9 then
        error("hook_budget: expected a whole number of instructions, 100 to 1e9", 0)
      end
    end
    if spec.hook_memory ~= nil then d.hook_memory = memory_bytes(spec.hook_memory) end
    if spec.hook_time ~= nil then d.hook_time_ns = time_ns(spec.hook_time) end
  end)
  if not ok then error(where(nil) .. ": " .. e, 0) end
  if spec.rules ~= nil and type(spec.rules) ~= "table" then
    error(where(nil) .. ": rules: expected a list of rule tables", 0)
  end
  local names = {}
  for i, r in ipairs(spec.rules or {}) do
    local ok2, n = pcall(normalize_rule, r, i)
    local label = type(r) == "table" and r.name and ("rule '" .. tostring(r.name) .. "'")
                  or ("rule " .. i)
    if not ok2 then error(string.format("%s: %s: %s", where(r, i), label, n), 0) end
    if names[n.name] then
      error(string.format("%s: %s: name already used by rule %d", where(r, i), label,
                          names[n.name]), 0)
    end
    names[n.name] = i
    d.rules[i] = n
  end
  return d
end

-- Run the policy file PATH in a sandbox (LIMITS: {memory = bytes, time =
-- seconds}, default 64 MiB and 1 s) and check what it made -> normalized
-- description, or nil and "PATH:LINE: reason".
function policy.parse_file(path, limits)
  limits = limits or {}
  local res, err = netbe.run_file(path, { what = "policy file", collect = { "rule", "settings" },
                                          hooks = true, memory = limits.memory,
                                          time = limits.time })
  if not res then return nil, err end
  local spec, wheres, settings_at = res.value, {}, nil
  if spec == nil then
    spec = {}
    for _, c in ipairs(res.calls.settings or {}) do
      if type(c[1]) ~= "table" then
        return nil, netbe.one_line(c[2] .. ": settings: expected a table")
      end
      for k, v in pairs(c[1]) do spec[k] = v end
      settings_at = c[2]
    end
    spec.rules = {}
    for i, c in ipairs(res.calls.rule or {}) do spec.rules[i], wheres[i] = c[1], c[2] end
  end
  local function where(r, i)
    if r == nil then return settings_at or path end
    return wheres[i] or string.format("%s: rules[%d]", path, i)
  end
  local ok, d = pcall(normalize, spec, where)
  if not ok then return nil, netbe.one_line(d) end
  return d
end

-- Check the policy table SPEC -> normalized description, or nil, message.
function policy.parse(spec)
  if type(spec) ~= "table" then return nil, "policy: expected a table" end
  local ok, d = pcall(normalize, spec, function(r, i)
    return r == nil and "policy" or ("rules[" .. i .. "]")
  end)
  if not ok then return nil, netbe.one_line(d) end
  return d
end

local function build(d, err)
  if not d then return nil, err end
  local p, e = netbe.policy_new(d)
  if not p then return nil, netbe.one_line(e) end
  return p, #d.rules
end

-- A compiled policy from a table -> policy, rule count | nil, message.
function policy.compile(spec) return build(policy.parse(spec)) end

-- A compiled policy from a file (LIMITS as parse_file) -> policy, rule
-- count | nil, message.
function policy.load(path, limits)
  local d, err = policy.parse_file(path, limits)
  if not d then return nil, err end
  local p, n = build(d)
  if not p then return nil, netbe.one_line(path .. ": " .. n) end
  return p, n
end

-- Load PATH and give it to WIRE, which takes it between batches with the
-- counters carried over. On any failure the wire keeps its policy.
-- Returns rule count | nil, message; never raises.
function policy.apply(wire, path, limits)
  local ok, n, e = pcall(function()
    local p, count = policy.load(path, limits)
    if not p then return nil, count end
    wire:set_policy(p)
    return count
  end)
  if not ok then return nil, netbe.one_line(tostring(n)) end
  return n, e
end

-- Counters as text lines, for `netbe wire --stats`.
function policy.format_stats(st)
  local lines = {}
  for _, dir in ipairs({ "to_guest", "from_guest" }) do
    local s = st[dir]
    lines[#lines + 1] = string.format("policy %-10s pass=%d/%dB drop=%d/%dB", dir,
      s.pass_frames, s.pass_bytes, s.drop_frames, s.drop_bytes)
  end
  lines[#lines + 1] = string.format("policy hook_errors=%d reloads=%d rules=%d",
                                    st.hook_errors, st.reloads, #st.rules)
  for _, r in ipairs(st.rules) do
    lines[#lines + 1] = string.format("policy rule %-20s hits=%d bytes=%d drops=%d",
                                      r.name, r.hits, r.bytes, r.drops)
  end
  return table.concat(lines, "\n")
end

return policy
