-- netbe.fields: the checks of a topology file's fields that the topology
-- (netbe.topology) and its NIC types (netbe.nictypes) share. Each checker
-- takes the value and its field ("vms.a.nics[1].mac"), returns the value
-- it accepts, and raises a located error for anything else.
local fields = {}

-- A located error: raised with a table so topology.check can tell it
-- from a bug.
function fields.bad(field, fmt, ...)
  error({ field = field, msg = string.format(fmt, ...) }, 0)
end
local bad = fields.bad

function fields.sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- S quoted as Lua would read it, on one line.
local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

-- A value as an error message shows it.
function fields.describe(v)
  if type(v) == "string" then return quote(v) end
  if type(v) == "table" then
    local ks = fields.sorted_keys(v)
    if #ks == 0 then return "an empty table" end
    for i, k in ipairs(ks) do ks[i] = type(k) == "string" and quote(k) or tostring(k) end
    return "a table with keys " .. table.concat(ks, ", ", 1, math.min(#ks, 4)) .. (#ks > 4 and ", ..." or "")
  end
  return tostring(v) .. " (" .. type(v) .. ")"
end
local describe = fields.describe

function fields.check_keys(t, allowed, field, what)
  if type(t) ~= "table" then bad(field, "expected a table, got %s", describe(t)) end
  local names = {}
  for k in pairs(allowed) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(fields.sorted_keys(t)) do
    if not allowed[k] then
      bad(field .. "." .. tostring(k), "unknown key for %s (expected one of: %s)",
          what, table.concat(names, ", "))
    end
  end
end

-- Names usable as an interface name on both systems and as a netgraph
-- node name: a letter, then letters, digits or '_', at most 15 characters
-- (Linux IFNAMSIZ 16 with the NUL). No '.' or ':', which netgraph paths use.
function fields.is_name(s)
  return type(s) == "string" and #s <= 15 and s:match("^[A-Za-z][A-Za-z0-9_]*$") ~= nil
end

-- Existing host interfaces may also carry '.' and '-' (re0.10, enp0s3-x).
function fields.is_ifname(s)
  return type(s) == "string" and #s <= 15 and s:match("^[A-Za-z][A-Za-z0-9_.%-]*$") ~= nil
end

-- A unicast, non-zero MAC in exactly netbe's form (netbe's own parser).
function fields.is_mac(s)
  return type(s) == "string" and require("netbe").parse_mac(s) ~= nil
end

function fields.name(v, field, what)
  if not fields.is_name(v) then
    bad(field, "expected %s: a letter then letters, digits or '_', at most 15 characters, got %s",
        what, describe(v))
  end
  return v
end

function fields.ifname(v, field)
  if not fields.is_ifname(v) then
    bad(field, "expected an interface name (letters, digits, '_', '.', '-'; at most 15 characters), got %s",
        describe(v))
  end
  return v
end

function fields.int(v, field, lo, hi, what)
  if math.type(v) ~= "integer" or v < lo or v > hi then
    bad(field, "expected %s %d..%d, got %s", what, lo, hi, describe(v))
  end
  return v
end

function fields.bool(v, field)
  if v ~= nil and type(v) ~= "boolean" then bad(field, "expected true or false, got %s", describe(v)) end
  return v == true
end

-- A list, each item checked by EACH(item, field).
function fields.list(v, field, each)
  if v == nil then return {} end
  if type(v) ~= "table" or #v ~= #fields.sorted_keys(v) then
    bad(field, "expected a list, got %s", describe(v))
  end
  local out = {}
  for i, x in ipairs(v) do out[i] = each(x, field .. "[" .. i .. "]") end
  return out
end

-- V as the value of KEY in the netbe config CFG ({BACKEND, key = value,
-- ...}: the rest of the spec it goes into), checked by netbe's own parser
-- (netbe.check) as a config set key by key, so a ',' cannot add keys to
-- the spec. Whoever opens the spec confines its paths; here any path may
-- do. EXPECTED says what the field takes.
function fields.spec_value(cfg, key, v, field, expected)
  local ok, why
  if type(v) == "string" then
    local with = { [key] = v }
    for k, x in pairs(cfg) do with[k] = x end
    ok, why = require("netbe").check(with, { allow_files = "/" })
  end
  if not ok then
    bad(field, "expected %s, got %s%s", expected, describe(v), why and ": " .. why or "")
  end
  return v
end

return fields
