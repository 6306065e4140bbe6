-- luafuzz.lua: a coverage-guided mutator for the inputs netbe reads as Lua:
-- policy files (lua/netbe/policy.lua, then netbe.policy_new and eval, and
-- the rules handed straight to netbe.policy_new as an embedder would) and
-- topology files (the validator in topology.lua, both renderers and
-- bhyve-args, through the `netbe` command's own code, topocli.main).
--
-- Why not libFuzzer: these inputs are programs. Byte mutations of Lua
-- source rarely stay valid Lua, and libFuzzer's coverage cannot see into
-- the Lua code that checks them (liblua is not instrumented). So this
-- mutates tokens (swaps, replacements from the seeds and a word list,
-- number extremes, odd and long strings, deep nesting, spliced spans of
-- other seeds, hostile library calls), keeps every mutant that reaches new
-- lines of lua/netbe/*.lua (cov: lines, ft: line-to-line steps), and runs
-- each batch in a child lua5.4 with the netbe module built under ASan and
-- UBSan (build/fuzz/lua/netbe.so, ASan's runtime preloaded): each file runs
-- in a sandbox of that module (netbe.run_file), here with a time bound of
-- 0.1 s instead of 1 s, so that files that hit it do not slow the search.
-- What must hold for each file: no Lua error escapes as a traceback
-- (every failure is a one-line message), no crash, no hang (the child
-- stops a case past 5 million instructions, 300,000 lines run or 512 MB
-- of its own; the file's sandbox has its own bounds), the file changes
-- nothing of netbe's state, and a policy that compiles judges frames pass
-- or drop.
--
-- Usage (scripts/fuzz runs it; flags as libFuzzer's):
--   lua5.4 tests/fuzz/luafuzz.lua policy|topology -seed=N (-runs=N | -max_total_time=S)
--          -artifact_prefix=DIR/ WORKDIR      (WORKDIR: seeds in, new inputs out)
--   lua5.4 tests/fuzz/luafuzz.lua policy|topology -replay FILE...
local KINDS = { policy = true, topology = true }
local BATCH = 25
local CASE_LIMIT = 5000000       -- instructions
local LINE_LIMIT = 300000        -- line events
local MEM_LIMIT = 512 * 1024     -- KiB
local FILE_TIME = 0.1            -- seconds: each file's sandbox

------------------------------------------------------------------------
-- The child: runs cases, writes one result line per case.
------------------------------------------------------------------------

local function frames()
  local function b(...) return string.char(...) end
  local mac = b(0x52, 0x54, 0, 0x12, 0x34, 0x56) .. b(2, 0, 0, 0, 0, 1)
  local ip4 = b(0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2)
  local tcp = b(0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0xff, 0xff, 0, 0, 0, 0)
  local ip6 = b(0x60, 0, 0, 0, 0, 8, 17, 64) .. string.rep("\0", 15) .. "\1" ..
              string.rep("\0", 15) .. "\2"
  return {
    mac .. b(8, 0) .. ip4 .. tcp,
    mac .. b(0x81, 0, 0, 20, 8, 6) .. b(0, 1, 8, 0, 6, 4, 0, 1) .. string.rep("\0", 20),
    mac .. b(0x86, 0xdd) .. ip6 .. b(0, 53, 0, 53, 0, 8, 0, 0),
    mac .. b(8, 0) .. b(0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 2, 15, 8, 8, 8, 8) ..
      b(8, 0, 0, 0, 0, 1, 0, 1),
    mac,
  }
end

-- The raw rule tables of a policy file, as an embedder would pass them
-- (hooks as the file wrote them: source text, or a function's description).
local function raw_spec(path)
  local res = require("netbe").run_file(path, { what = "policy file", hooks = true,
                                                collect = { "rule", "settings" } })
  if not res then return nil end
  local spec = type(res.value) == "table" and res.value or {}
  if res.value == nil then
    for _, c in ipairs(res.calls.settings or {}) do
      if type(c[1]) == "table" then spec = c[1] end
    end
  end
  if spec.rules == nil then
    spec.rules = {}
    for i, c in ipairs(res.calls.rule or {}) do spec.rules[i] = c[1] end
  end
  return spec
end

-- Nil when MSG is a one-line message, else what is wrong with it.
local function bad_message(msg)
  if type(msg) ~= "string" then return "a " .. type(msg) .. " instead of a message" end
  if msg == "" then return "an empty message" end
  if msg:find("stack traceback", 1, true) then return "a traceback: " .. msg end
  if msg:find("[\n\r]") then return "more than one line: " .. msg end
  return nil
end

local function run_policy(path)
  local policy = require("netbe.policy")
  local ok, p, n = xpcall(policy.load, debug.traceback, path)
  if not ok then return "traceback", p end
  if not p then
    local why = bad_message(n)
    if why then return "message", why end
  else
    for i, f in ipairs(frames()) do
      local dir = i % 2 == 0 and "to_guest" or "from_guest"
      local ok2, v = xpcall(p.eval, debug.traceback, p, dir, f)
      if not ok2 then return "traceback", v end
      if v ~= "pass" and v ~= "drop" then return "verdict", tostring(v) end
    end
  end
  local spec = raw_spec(path)
  if spec then
    local netbe = require("netbe")
    local ok3, q, e = pcall(netbe.policy_new, spec)
    if not ok3 then return "traceback", q end
    if not q then
      local why = bad_message(e)
      if why then return "message", why end
    else
      for _, f in ipairs(frames()) do pcall(q.eval, q, "from_guest", f) end
    end
  end
  return "ok"
end

local function run_topology(path, topocli, fails)
  for _, argv in ipairs({ { "plan", path, "--os", "linux" }, { "plan", path, "--os", "freebsd" },
                          { "bhyve-args", path, "--os", "linux" } }) do
    local cmd = table.remove(argv, 1)
    for i = #fails, 1, -1 do fails[i] = nil end
    local ok, status = xpcall(topocli.main, debug.traceback, cmd, argv)
    if not ok then return "traceback", status end
    if status ~= 0 and status ~= 1 then return "status", cmd .. " returned " .. tostring(status) end
    for _, m in ipairs(fails) do
      local why = bad_message(m)
      if why then return "message", why end
    end
  end
  return "ok"
end

-- Coverage of lua/netbe/*.lua and the limits, as one hook. A limit is
-- raised as an error wherever the case is; code under test may catch it,
-- so it is also noted here.
local seen, fresh, last, limit_hit, budget, lines = {}, {}, nil, nil, 0, 0
local SELF = debug.getinfo(1, "S").source

-- Raise the limit hit, unless the child's own code runs (between cases).
local function stop(src)
  if src ~= SELF then error("luafuzz: " .. limit_hit, 3) end
end

local function hook(event, line)
  local src = debug.getinfo(2, "S").source
  if event == "count" then
    budget = budget + 1000
    if budget > CASE_LIMIT then limit_hit = "over 5 million instructions" end
  else
    -- A tight loop is all line events, each slow here: count them too.
    lines = lines + 1
    if lines > LINE_LIMIT then limit_hit = "over 300,000 lines" end
  end
  if collectgarbage("count") > MEM_LIMIT then limit_hit = "memory over 512 MB" end
  if limit_hit then return stop(src) end
  if event == "count" or not src:find("lua/netbe/", 1, true) then return end
  local key = src:match("([^/]+)%.lua$") .. ":" .. line
  local edge = (last or "") .. ">" .. key
  last = key
  if not seen[key] then seen[key] = true; fresh[#fresh + 1] = key end
  if not seen[edge] then seen[edge] = true; fresh[#fresh + 1] = edge end
end

-- The host's library tables, so that a file that changes them (through a
-- sandbox that hands them over) is noticed and does not spoil later cases.
local LIBS = { string = string, table = table, math = math, utf8 = utf8 }

local function snapshot()
  local copy = {}
  for name, lib in pairs(LIBS) do
    copy[name] = {}
    for k, v in pairs(lib) do copy[name][k] = v end
  end
  return copy
end

-- Put the libraries back as COPY has them; returns the first field that
-- had changed, or nil.
local function restore(copy)
  local changed
  for name, lib in pairs(LIBS) do
    for k in pairs(lib) do
      if copy[name][k] == nil then changed = changed or name .. "." .. k; lib[k] = nil end
    end
    for k, v in pairs(copy[name]) do
      if lib[k] ~= v then changed = changed or name .. "." .. k; lib[k] = v end
    end
  end
  return changed
end

local function child(kind, results, files)
  package.cpath = "build/fuzz/lua/?.so;" .. package.cpath
  -- Each file's sandbox gets FILE_TIME unless the caller gives a bound.
  local netbe = require("netbe")
  local run_file = netbe.run_file
  netbe.run_file = function(path, opts)
    opts = opts or {}
    opts.time = opts.time or FILE_TIME
    return run_file(path, opts)
  end
  -- Policies reach C: a collection at every step there, so a pointer kept
  -- into a string Lua may free shows under ASan at once.
  if kind == "policy" then collectgarbage("incremental", 1, 1000) end
  local out = assert(io.open(results, "w"))
  out:setvbuf("no")
  local fails, topocli = {}, nil
  if kind == "topology" then
    -- The command's messages, caught where topocli writes them.
    local cmdline = require("netbe.cmdline")
    cmdline.fail = function(status, fmt, ...)
      fails[#fails + 1] = string.format(fmt, ...)
      return status
    end
    topocli = require("netbe.topocli")
  end
  for i, path in ipairs(files) do
    out:write("start ", i, "\n")
    local libs = snapshot()
    budget, lines, last, limit_hit = 0, 0, nil, nil
    debug.sethook(hook, "l", 1000)
    local ok, res, why = pcall(kind == "policy" and run_policy or run_topology, path, topocli, fails)
    debug.sethook()
    local changed = restore(libs)
    if limit_hit or not ok then
      -- Only the limits throw past the checks above.
      res, why = "limit", limit_hit or tostring(res)
    elseif changed then
      res, why = "escape", "the file changed the host's " .. changed
    end
    out:write(res, " ", i, " ", #fresh, " ", table.concat(fresh, " "), "\n")
    if res ~= "ok" then out:write("why ", i, " ", (tostring(why):gsub("\n", "\\n")), "\n") end
    fresh = {}
    collectgarbage()
  end
  out:write("done\n")
  out:close()
end

------------------------------------------------------------------------
-- The mutator
------------------------------------------------------------------------

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
            repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

-- Lua source as tokens { kind, text }; whitespace and comments kept.
local function tokenize(src)
  local t, i, n = {}, 1, #src
  local function push(kind, j) t[#t + 1] = { kind, src:sub(i, j - 1) }; i = j end
  while i <= n do
    local c = src:sub(i, i)
    local eq = src:match("^%[(=*)%[", i) or (src:sub(i, i + 1) == "--" and
                                               src:match("^%-%-%[(=*)%[", i))
    if c:match("%s") then
      push("ws", src:find("[^%s]", i) or n + 1)
    elseif src:sub(i, i + 1) == "--" then
      if eq then
        local _, e = src:find("]" .. eq .. "]", i, true)
        push("ws", (e or n) + 1)
      else
        push("ws", src:find("\n", i, true) or n + 1)
      end
    elseif eq then
      local _, e = src:find("]" .. eq .. "]", i, true)
      push("string", (e or n) + 1)
    elseif c:match("[%a_]") then
      local j = src:find("[^%w_]", i) or n + 1
      push(KEYWORDS[src:sub(i, j - 1)] and "keyword" or "name", j)
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local j = select(2, src:find("^0[xX][%x%.]*[pP]?[+-]?%x*", i)) or
                select(2, src:find("^[%d%.]*[eE][+-]?%d*", i)) or
                select(2, src:find("^[%d%.]+", i))
      push("number", j + 1)
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n and src:sub(j, j) ~= c and src:sub(j, j) ~= "\n" do
        j = j + (src:sub(j, j) == "\\" and 2 or 1)
      end
      push("string", j + 1)
    else
      local three, two = src:sub(i, i + 2), src:sub(i, i + 1)
      if three == "..." then push("op", i + 3)
      elseif ({ ["=="] = 1, ["~="] = 1, ["<="] = 1, [">="] = 1, [".."] = 1, ["::"] = 1,
                ["<<"] = 1, [">>"] = 1, ["//"] = 1 })[two] then push("op", i + 2)
      else push("op", i + 1) end
    end
  end
  return t
end

local NUMBERS = { "0", "-1", "1", "255", "256", "4095", "4096", "65535", "65536", "2^31",
  "2^32", "2^53", "math.maxinteger", "math.mininteger", "1e308", "-1e308", "1/0", "-1/0",
  "0/0", "0.5", "-0.0", "0x7fffffffffffffff", "1e-320", "99999999999999999999", "1e9", "46",
  "9000", "4094", "-4096" }

local function long_string(n, ch) return string.format("%q", string.rep(ch or "x", n)) end

local STRINGS = { '""', '"\\n"', '"a\\nb"', '"\\0"', '"a\\rb"', '"\\t"', '"%"', '"%s%s%n"',
  '"\\xff\\xfe"', '"../../etc/passwd"', '"a,b=c"', '"256.1.1.1"', '"10.0.0.1/33"',
  '"10.0.0.0/24"', '"::"',
  '"ff:ff:ff:ff:ff:ff"', '"1e999"', '"-1"', '"0x10"', '"unix:/tmp/x,mtu=9000"',
  '"127.0.0.1:5000"', '"[::1]:5000"', '"tcp::2222-:22"', '"tap0"', '"bridge0"', '"re0.10"',
  '"x;rm -rf /"', '"$(reboot)"', '"`id`"', '"\\27[2J"', '" "', '"pass"', '"drop"', '"!syn"',
  '"10mbit"', '"1000pps"', '"4 kb"', '"99999999999999999999 kb"', '"from_guest"', '"arp"',
  long_string(300), long_string(70000), long_string(16, "a") }

local WORDS = { "name", "switches", "vms", "type", "bridge", "nat", "netgraph", "existing",
  "uplink", "members", "address", "mtu", "vlan", "private", "outbound", "dhcp", "range",
  "lease", "persistent", "autolink", "interface", "nics", "switch", "ifname", "mac", "slot",
  "link", "socket", "device", "hostfwd", "connect", "peer", "tap", "veth", "ngd", "slirp",
  "stream", "rule", "settings", "dir", "src_mac", "dst_mac", "ethertype", "src_ip", "dst_ip",
  "proto", "sport", "dport", "tcp_flags", "icmp_type", "len", "action", "rate", "burst",
  "hook", "default", "fail", "hook_budget", "hook_memory", "hook_time", "rules", "function",
  "return",
  "pkt", "nil", "true", "false", "{", "}", "=", ",", "..", "#", "(", ")", "[", "]", ";",
  "local", "_ENV", "_G", "...", "not", "and", "or" }

-- Hostile code, inserted where a statement may start.
local SNIPPETS = {
  "string = nil", "table = nil", "error({})", "error(nil)", "error(123)", "error('x', 0)",
  "error('a\\nb\\r\\0c')", "error(setmetatable({}, {__tostring = function() error('x') end}))",
  "local t = {} t.t = t return t", "return setmetatable({}, {__index = error})",
  "rule(nil)", "rule(rule)", "settings(1)", "settings{rules = 5}", "settings{hook_time = 0}",
  "name = {}", "switches = 5", "vms = {x = {nics = {{}}}}", "_ENV = nil",
  "return nil", "return 1, 2", "goto x ::x::", "return coroutine.wrap(print)",
  "os.exit(1)", "io.write('x')", "require('os')", "load('x')()",
  "return debug.traceback()", "string.format('%99999s', 'x')",
  "local f f = function() return f() end f()", "local function f() f() end f()",
  "return " .. string.rep("{", 250) .. string.rep("}", 250),
  "x = " .. string.rep("(", 250) .. "1" .. string.rep(")", 250),
  "x = " .. string.rep("{", 40) .. string.rep("}", 40),
  "x = " .. string.rep("-", 300) .. "1",
  "x = " .. string.rep("f(", 300) .. string.rep(")", 300),
  "tostring = nil", "pairs = error", "next = nil", "type = nil",
  "string.format = nil", "table.concat = error", "math.floor = nil",
  "string.match = function() while true do end end",
  "string.dump = function() return '\\27Lua' end",
  "string.rep('x', 1e10)", "('x'):rep(1 << 40)", "string.rep('', math.maxinteger)",
  "(" .. long_string(40, "a") .. "):find('a*a*a*a*a*a*a*a*a*a*b')",
  "table.move({}, 1, math.maxinteger - 1, 2)",
  "while true do end", "for i = 1, 1e12 do end",
  "local s = 'x' for i = 1, 40 do s = s .. s end",
  "local t = {} for i = 1, 1e9 do t[i] = i end",
  "rule{name = 'h', action = 'lua', hook = 'return function(pkt) return \\'drop\\' end'}",
  "rule{name = 'h', action = 'lua', hook = 'while true do end'}",
  "rule{name = 'h', action = 'lua', hook = '\\27Lua'}",
  "rule{name = 'h', action = 'lua', hook = function(pkt) while true do end end}",
  "rule{name = 'h', action = 'lua', hook = function(pkt) return string.rep('x', 1 << 30) end}",
}

local function pick(t) return t[math.random(#t)] end

-- An index of a token that is not whitespace, or nil.
local function solid(t)
  for _ = 1, 20 do
    local i = math.random(#t)
    if t[i][1] ~= "ws" then return i end
  end
end

local function text(t)
  local out = {}
  for i, tok in ipairs(t) do out[i] = tok[2] end
  return table.concat(out)
end

-- Mutate tokens T in place; POOL: words to put in, OTHER: another seed's
-- tokens to splice from.
local function mutate(kind, t, pool, other)
  local i = solid(t)
  if not i then return end
  local op = math.random(10)
  if op == 1 then
    local j = solid(t)
    if j then t[i], t[j] = t[j], t[i] end
  elseif op == 2 then
    t[i] = { "name", " " .. pick(pool) .. " " }
  elseif op == 3 then
    t[i] = { "number", " " .. pick(NUMBERS) .. " " }
  elseif op == 4 then
    local j = i
    for _ = 1, 20 do
      local c = math.random(#t)
      if t[c][1] == "string" or t[c][1] == "number" then j = c; break end
    end
    t[j] = { "string", " " .. pick(STRINGS) .. " " }
  elseif op == 5 then
    local depth = pick({ 20, 40, 100, 300, 1000 })
    local pair = pick({ { "{", "}" }, { "(", ")" } })
    t[i] = { "op", string.rep(pair[1], depth) .. t[i][2] .. string.rep(pair[2], depth) }
  elseif op == 6 then
    local j = math.min(#t, i + math.random(0, 12))
    local copy = {}
    for k = i, j do copy[#copy + 1] = t[k] end
    local at = math.random(#t)
    for k = #copy, 1, -1 do table.insert(t, at, copy[k]) end
  elseif op == 7 then
    for _ = 1, math.random(1, 6) do if #t > 1 then table.remove(t, math.min(i, #t)) end end
  elseif op == 8 then
    local at = 1
    for _ = 1, 10 do
      local c = math.random(#t)
      if t[c][1] == "ws" and t[c][2]:find("\n") then at = c + 1; break end
    end
    table.insert(t, at, { "op", "\n" .. pick(SNIPPETS) .. "\n" })
  elseif op == 9 then
    local o = other
    if #o > 0 then
      local a = math.random(#o)
      local b = math.min(#o, a + math.random(0, 30))
      for k = b, a, -1 do table.insert(t, i, o[k]) end
    end
  else
    t[i] = { "name", " " .. pick(WORDS) .. " " }
  end
end

------------------------------------------------------------------------
-- The driver
------------------------------------------------------------------------

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

package.path = "lua/?.lua;" .. package.path
local shq = require("netbe.plan").shquote

local function ls(dir, pattern)
  local out = {}
  local p = io.popen("ls " .. shq(dir) .. " 2>/dev/null")
  for name in p:lines() do
    if name:match(pattern) then out[#out + 1] = dir .. "/" .. name end
  end
  p:close()
  table.sort(out)
  return out
end

local function asan_runtime()
  local p = io.popen("clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null")
  local path = p:read("l")
  p:close()
  return path
end

-- Run KIND's child on FILES; returns a list of { res, why, fresh } per
-- case it finished, and for a case it died in { res = "crash" or "hang" }.
local function run_batch(kind, files, tmp, preload)
  local results, errlog = tmp .. "/results", tmp .. "/child.log"
  local quoted = {}
  for i, f in ipairs(files) do quoted[i] = shq(f) end
  local cmd = string.format("cd %s && NETBE_STATE_DIR=%s LD_PRELOAD=%s " ..
    "ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 " ..
    "timeout -s KILL %d lua5.4 tests/fuzz/luafuzz.lua %s -child %s %s >/dev/null 2>%s",
    shq(os.getenv("PWD") or "."), shq(tmp), shq(preload), 30, kind, shq(results),
    table.concat(quoted, " "), shq(errlog))
  local ok, _, code = os.execute(cmd)
  local out, started, done = {}, 0, false
  local f = io.open(results)
  for line in f and f:lines() or function() end do
    done = done or line == "done"
    local res, i, n, rest = line:match("^(%a+) (%d+) (%d+) ?(.*)$")
    if line:match("^start") then
      started = tonumber(line:match("%d+"))
    elseif line:match("^why ") then
      local i2, why = line:match("^why (%d+) (.*)$")
      out[tonumber(i2)].why = why
    elseif res then
      local fresh = {}
      if tonumber(n) > 0 then for k in rest:gmatch("%S+") do fresh[#fresh + 1] = k end end
      out[tonumber(i)] = { res = res, fresh = fresh }
    end
  end
  if f then f:close() end
  local log = read(errlog) or ""
  if started > #out or started == 0 and #files > 0 then
    local killed = not ok and (code == 137 or code == 9)
    out[math.max(started, 1)] = { res = killed and "hang" or "crash", why = log, fresh = {} }
  elseif not ok and done then
    -- Every case went through, then closing the state failed.
    out[#out].res, out[#out].why = "crash", "at exit: " .. log
  end
  return out
end

local function hash(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

local function parse_flags(argv)
  local o = { files = {} }
  for i = 2, #argv do
    local k, v = argv[i]:match("^%-([%w_]+)=(.*)$")
    if k then o[k] = v
    elseif argv[i] == "-replay" then o.replay = true
    else o.files[#o.files + 1] = argv[i] end
  end
  return o
end

local function report(kind, r, path, o)
  local what = r.res .. (r.why and (": " .. r.why:sub(1, 600)) or "")
  io.write("luafuzz: ", kind, " file ", path, ": ", what, "\n")
  if o.artifact_prefix and not o.replay then
    local data = read(path) or ""
    local out = o.artifact_prefix .. r.res .. "-" .. hash(data) .. ".lua"
    write(out, data)
    io.write("luafuzz: input written to ", out, "\n")
  end
end

local function main(argv)
  local kind = argv[1]
  if not KINDS[kind] then
    io.stderr:write("usage: luafuzz.lua policy|topology -seed=N (-runs=N | -max_total_time=S) ",
                    "-artifact_prefix=DIR/ WORKDIR, or -replay FILE...\n")
    return 2
  end
  if argv[2] == "-child" then
    child(kind, argv[3], table.move(argv, 4, #argv, 1, {}))
    return 0
  end
  local o = parse_flags(argv)
  local tmp = os.getenv("TMPDIR") or "/tmp"
  local preload = asan_runtime()
  local found, execs = 0, 0
  local cov, ft = {}, {}
  local ncov, nft = 0, 0
  local function absorb(fresh)
    local new = false
    for _, k in ipairs(fresh) do
      local set = k:find(">", 1, true) and ft or cov
      if not set[k] then
        set[k] = true
        new = true
        if set == cov then ncov = ncov + 1 else nft = nft + 1 end
      end
    end
    return new
  end
  if o.replay then
    local res = run_batch(kind, o.files, tmp, preload)
    for i, path in ipairs(o.files) do
      local r = res[i] or { res = "crash", why = "the child stopped before it" }
      if r.res ~= "ok" then found = found + 1; report(kind, r, path, o) end
      absorb(r.fresh or {})
    end
    io.write(string.format("#%d DONE cov: %d ft: %d\n", #o.files, ncov, nft))
    return found == 0 and 0 or 1
  end
  local work = assert(o.files[1], "no WORKDIR")
  math.randomseed(tonumber(o.seed) or 1)
  local seeds = ls(work, "^[^.]")
  local examples = ls(kind == "policy" and "examples/policies" or "examples/topologies", "%.lua$")
  local corpus, pool, alltokens = {}, {}, {}
  for _, path in ipairs(table.move(examples, 1, #examples, #seeds + 1,
                                   table.move(seeds, 1, #seeds, 1, {}))) do
    local src = read(path)
    if src then
      local t = tokenize(src)
      corpus[#corpus + 1] = src
      alltokens[#alltokens + 1] = t
      for _, tok in ipairs(t) do
        if tok[1] == "name" or tok[1] == "string" or tok[1] == "number" then
          pool[#pool + 1] = tok[2]
        end
      end
    end
  end
  for _, w in ipairs(WORDS) do pool[#pool + 1] = w end
  -- The seeds first, as they are: their coverage is the start.
  local initial = table.move(examples, 1, #examples, #seeds + 1, table.move(seeds, 1, #seeds, 1, {}))
  local first = run_batch(kind, initial, tmp, preload)
  for i = 1, #initial do
    local r = first[i]
    if r then
      absorb(r.fresh)
      if r.res ~= "ok" then found = found + 1; report(kind, r, initial[i], o) end
    end
  end
  execs = #initial
  io.write(string.format("#%d INITED cov: %d ft: %d corp: %d\n", execs, ncov, nft, #corpus))
  local runs = tonumber(o.runs)
  local started = os.time()
  local deadline = started + (tonumber(o.max_total_time) or 60)
  while (runs and execs < runs) or (not runs and os.time() < deadline) do
    local batch, texts = {}, {}
    for b = 1, BATCH do
      local t = tokenize(pick(corpus))
      for _ = 1, math.random(1, 4) do mutate(kind, t, pool, pick(alltokens)) end
      texts[b] = text(t)
      batch[b] = string.format("%s/case-%d.lua", tmp, b)
      write(batch[b], texts[b])
    end
    local res = run_batch(kind, batch, tmp, preload)
    for b = 1, BATCH do
      local r = res[b]
      if r then
        execs = execs + 1
        if r.res ~= "ok" then
          found = found + 1
          report(kind, r, batch[b], o)
        end
        if absorb(r.fresh) and r.res == "ok" then
          corpus[#corpus + 1] = texts[b]
          alltokens[#alltokens + 1] = tokenize(texts[b])
          write(string.format("%s/luafuzz-%s.lua", work, hash(texts[b])), texts[b])
        end
      end
    end
    io.write(string.format("#%d pulse cov: %d ft: %d corp: %d time: %ds\n", execs, ncov, nft,
                           #corpus, os.time() - started))
    io.stdout:flush()
    if found > 0 then break end
  end
  io.write(string.format("#%d DONE cov: %d ft: %d corp: %d\n", execs, ncov, nft, #corpus))
  io.write("stat::number_of_executed_units: ", execs, "\n")
  return found == 0 and 0 or 1
end

os.exit(main(arg))
