-- Policy files, policy hooks and topology files run in sandboxes of their
-- own: the attacks of issue 13 each end promptly with a message naming the
-- bound (run in a child process under a timeout and an address-space
-- limit, so that a hang or a runaway allocation fails the test instead of
-- the machine); hooks written as closures come back exactly; the bounded
-- library functions behave as Lua's own.
local netbe = require "netbe"
local policy = require "netbe.policy"
local topology = require "netbe.topology"
local ns = require "ns"

local tmp = ns.tmpdir()
local serial = 0

local function write(name, text) return ns.write(tmp .. "/" .. name, text) end

-- Run CODE in a child lua5.4 that finds netbe's modules, for at most 30 s
-- and 4 GiB of address space; returns its exit status, its output and the
-- seconds it took.
local function child(code)
  serial = serial + 1
  local file = write("child" .. serial .. ".lua",
    "package.path = 'lua/?.lua;' .. package.path\n" ..
    "package.cpath = 'lua/?.so;' .. package.cpath\n" ..
    "FRAME = ('\\0'):rep(12) .. '\\8\\0' .. ('\\0'):rep(46)\n" .. code)
  local _, out = ns.sh("ulimit -v 4194304; s=$(date +%s%N); timeout 30 lua5.4 " .. file ..
                       "; rc=$?; echo; echo \"rc=$rc ms=$(( ($(date +%s%N) - s) / 1000000 ))\"")
  local rc, ms = out:match("rc=(%d+) ms=(%d+)%s*$")
  return tonumber(rc), out, tonumber(ms) / 1000
end

-- Load the policy file holding TEXT in a child; returns its status, output
-- ("loaded" or the error) and seconds.
local function load_policy(name, text)
  local file = write(name, text)
  local rc, out, secs = child(("local p, err = require('netbe.policy').load(%q)\n" ..
                               "print(p and 'loaded' or err)\n"):format(file))
  return rc, out, secs, file
end

teardown(ns.cleanup)

describe("policy sandbox: the attacks of issue 13", function()
  it("a file that replaces string.dump chooses nothing: hooks compile from their source", function()
    local rc, out = child(([[
local p = assert(require("netbe.policy").load(%q))
print(p:eval("to_guest", FRAME), p:stats().hook_errors)
]]):format(write("dump.lua", [[
local real = string.dump
string.dump = function() return real(function() return "drop" end) end
rule { name = "h", action = "lua", hook = function(pkt) return "pass" end }
]])))
    assert.equal(0, rc, out)
    assert.truthy(out:find("pass\t0", 1, true), out)
  end)

  it("a file that overrides string.match neither hangs netbe nor outlives its load", function()
    local evil = write("match.lua", [[
string.match = function() while true do end end
string.format = string.match
rule { name = "mac", src_mac = "52:54:00:12:34:56", src_ip = "10.0.0.0/8" }
]])
    local plain = write("plain.lua", [[rule { name = "mac", src_mac = "52:54:00:12:34:56" }]])
    local rc, out, secs = child(([[
local policy = require("netbe.policy")
local a, ea = policy.load(%q)
local b, eb = policy.load(%q)
print(a and "ok" or ea, b and "ok" or eb)
]]):format(evil, plain))
    assert.equal(0, rc, out)
    assert.truthy(out:find("ok\tok", 1, true), out)
    assert.is_true(secs < 10, out)
  end)

  -- Long C calls: none may outlast the file's 1 s or the hook's 1 ms.
  local slow = {
    { "string.rep of empty pieces", "local s = string.rep('', math.maxinteger)" },
    { "a backtracking pattern", "local i = ('a'):rep(40):find('.-.-.-.-.-.-.-b')", true },
    { "table.move of nils", "table.move({}, 1, math.maxinteger - 1, 2)", true },
  }
  for _, c in ipairs(slow) do
    it("a file with " .. c[1] .. " ends within its time bound", function()
      local rc, out, secs, file = load_policy("slow.lua", c[2] .. "\nrule { name = 'r' }\n")
      assert.equal(0, rc, out)
      if c[3] then
        assert.truthy(out:find(file .. ":1: ran past its time bound of 1 s", 1, true), out)
      else
        assert.truthy(out:find("loaded", 1, true), out)
      end
      assert.is_true(secs < 10, out)
    end)

    it("a hook with " .. c[1] .. " ends within its time bound", function()
      local rc, out, secs = child(([[
local p = assert(require("netbe.policy").load(%q))
local t0 = os.clock()
local v = p:eval("to_guest", FRAME)
print(v, p:stats().hook_errors, os.clock() - t0 < 0.5)
]]):format(write("slowhook.lua", "rule { name = 'h', action = 'lua', hook = function(pkt)\n" ..
                      c[2] .. "\nreturn 'pass' end }\n")))
      assert.equal(0, rc, out)
      assert.truthy(out:find(c[3] and "drop\t1\ttrue" or "pass\t0\ttrue", 1, true), out)
      assert.is_true(secs < 10, out)
    end)
  end

  it("a file that holds four 256 MiB strings goes over its memory bound", function()
    local rc, out, _, file = load_policy("big.lua", [[
local a, b = ('a'):rep(1 << 28), ('b'):rep(1 << 28)
local c, d = ('c'):rep(1 << 28), ('d'):rep(1 << 28)
rule { name = 'r' }
]])
    assert.equal(0, rc, out)
    assert.truthy(out:find(file .. ": went over its memory bound of 64 MiB", 1, true), out)
  end)

  it("netbe.policy_new refuses unknown keys, names that are not strings, and bad values", function()
    local p, err = netbe.policy_new{ rules = { { name = "a", action = 1, dport = 22 } } }
    assert.is_nil(p)
    assert.equal("rule 'a': unknown field 'dport' (expected one of: name, dir, src_mac, " ..
                 "src_mac_mask, dst_mac, dst_mac_mask, ethertype, vlan, ip_family, src_ip, " ..
                 "src_plen, dst_ip, dst_plen, proto, sport_lo, sport_hi, dport_lo, dport_hi, " ..
                 "tcp_flags, tcp_flags_mask, icmp_type, len_lo, len_hi, action, rate_unit, " ..
                 "rate, burst, hook, hook_name)", err)
    p, err = netbe.policy_new{ rules = { { name = 1, action = 1 } } }
    assert.is_nil(p)
    assert.equal("rule 1: field 'name': expected a string, got number", err)
    p, err = netbe.policy_new{ rules = { { name = "a", dport_lo = 22.5, dport_hi = 22 } } }
    assert.equal("rule 'a': field 'dport_lo': expected an integer 0-65535, got 22.5", err)
    p, err = netbe.policy_new{ hook_memory = 1e20, rules = {} }
    assert.truthy(err and err:find("policy_new: field 'hook_memory': expected an integer", 1, true), err)
    p, err = netbe.policy_new{ rules = { { name = "a", hook_upvalues = "return 1" } } }
    assert.truthy(err and err:find("rule 'a': unknown field 'hook_upvalues'", 1, true), err)
    p, err = netbe.policy_new{ rules = { "x" } }
    assert.equal("rule 1: expected a table, got string", err)
    p = assert(netbe.policy_new{ default = 1, rules = { { name = "a", action = 0, proto = 17,
                                                          dport_lo = 22, dport_hi = 22 } } })
    assert.equal("drop", p:eval("to_guest", ("\0"):rep(12) .. "\8\0" .. ("\0"):rep(46)))
  end)

  it("a file gets no more than its own libraries and no way out", function()
    local rc, out = load_policy("probe.lua", [[
assert(io == nil and os == nil and require == nil and load == nil and debug == nil)
assert(pcall == nil and setmetatable == nil and getmetatable == nil and string.dump == nil)
assert(collectgarbage == nil and print == nil and coroutine == nil and package == nil)
rule { name = 'r' }
]])
    assert.equal(0, rc, out)
    assert.truthy(out:find("loaded", 1, true), out)
  end)
end)

describe("topology sandbox", function()
  it("stops a file that loops at its time bound", function()
    local file = write("loop.lua", "name = 'x'\nwhile true do end\n")
    local rc, out, secs = child(("print(select(2, require('netbe.topology').load(%q)))"):format(file))
    assert.equal(0, rc, out)
    assert.truthy(out:find(file .. ":2: ran past its time bound of 1 s", 1, true), out)
    assert.is_true(secs < 10, out)
  end)

  it("stops a file that allocates without bound at its memory bound", function()
    local file = write("hog.lua", "local t = {}\nwhile true do t[#t + 1] = ('x'):rep(1 << 16) .. #t end\n")
    local rc, out = child(("print(select(2, require('netbe.topology').load(%q)))"):format(file))
    assert.equal(0, rc, out)
    assert.truthy(out:find(file .. ": went over its memory bound of 64 MiB", 1, true), out)
  end)

  it("takes limits from the caller", function()
    local file = write("limits.lua", "local s = ('x'):rep(1 << 20)\nname = 'lim'\n")
    local t, err = topology.load(file, { memory = 512 * 1024 })
    assert.is_nil(t)
    assert.equal(file .. ": went over its memory bound of 512 KiB", err)
    t = assert(topology.load(file, { memory = 4 << 20, time = 0.5 }))
    assert.equal("lim", t.name)
  end)

  it("returns plain data only: a function in the topology is named, not run", function()
    local file = write("fn.lua", "vms = { a = { nics = { { type = 'slirp', f = print or tostring } } } }\n")
    local t, err = topology.load(file)
    assert.is_nil(t)
    assert.equal(file .. ": vms.a.nics[1].f: a function (expected strings, numbers, booleans " ..
                 "and tables of them)", err)
    file = write("cycle.lua", "local t = {}\nt.t = t\nswitches = t\n")
    t, err = topology.load(file)
    assert.truthy(err:find("tables nested deeper than 32", 1, true), err)
  end)

  it("gives `netbe plan` a one-line error for a directory, a FIFO or a device", function()
    local fifo = tmp .. "/fifo"
    assert(ns.sh("mkfifo " .. fifo))
    for _, c in ipairs({ { tmp .. "/", "it is a directory" }, { fifo, "it is not a regular file" },
                         { "/dev/zero", "it is not a regular file" } }) do
      local _, out = ns.sh("ulimit -v 4194304; timeout 20 " .. ns.netbe .. " plan " .. c[1] ..
                           "; echo status=$?")
      assert.equal("netbe: " .. c[1] .. ": cannot read the topology file: " .. c[2] ..
                   "\nstatus=1\n", out)
    end
    local _, out = ns.sh("timeout 20 " .. ns.netbe .. " wire null null --policy " .. tmp ..
                         "/; echo status=$?")
    assert.equal("netbe: wire: " .. tmp .. "/: cannot read the policy file: it is a directory" ..
                 "\nstatus=1\n", out)
  end)
end)

describe("hooks written as closures", function()
  local FRAME = ("\0"):rep(12) .. "\8\0" .. ("\0"):rep(46)

  -- Load TEXT as a policy file and evaluate FRAME once per rule name given:
  -- the verdicts, or nil and the error.
  local function verdicts(text, n)
    local p, err = policy.load(write("hooks.lua", text))
    if not p then return nil, err end
    local out = {}
    for i = 1, n or 1 do out[i] = p:eval("to_guest", FRAME) end
    return out, p:stats().hook_errors
  end

  it("finds each function's own text when several share a line", function()
    local v, e = verdicts([[
local a, b = function(p) return "pass" end, function(p) return "drop" end
settings { default = "pass" }
rule { name = "b", action = "lua", hook = b }
]])
    assert.same({ "drop" }, v, e)
  end)

  it("strips a local function's name, keeps comments and strings that say end", function()
    local v, e = verdicts([[local function hook(pkt) local s = "end" --[==[ end function ]==]
  return s == "end" and "drop" or nil end
rule { name = "h", action = "lua", hook = hook }
]])
    assert.same({ "drop" }, v, e)
  end)

  it("keeps what the hook captured, and its own state between calls", function()
    local v, errors = verdicts([[
local PORTS, n = { [0] = true }, 0
rule { name = "h", action = "lua", hook = function(pkt)
  n = n + 1
  if n >= 3 and PORTS[pkt.len - 60] then return "drop" end
  return "pass"
end }
]], 3)
    assert.same({ "pass", "pass", "drop" }, v)
    assert.equal(0, errors)
  end)

  it("takes hooks a function made: each with its own captured values", function()
    local v, errors = verdicts([[
local function drop_len(len, verdict)
  return function(pkt) if pkt.len == len then return verdict end end
end
settings { default = "pass" }
rule { name = "a", action = "lua", hook = drop_len(61, "pass") }
rule { name = "b", action = "lua", hook = drop_len(60, "drop") }
]])
    assert.same({ "drop" }, v)
    assert.equal(0, errors)
  end)

  it("reports a hook's errors at the file's own lines", function()
    local p, err = policy.load(write("hookline.lua", [[
settings { default = "pass" }

rule { name = "h", action = "lua", hook = function(pkt)
  return nil end }
local x = error("x")
]]))
    assert.is_nil(p)
    assert.truthy(err:find("hookline.lua:5: x", 1, true), err)
    p, err = policy.load(write("hookbuild.lua", [[
local X = 1
local f = function(pkt) return X + nil end
rule { name = "h", action = "lua", hook = f }
]]))
    assert.truthy(p, err)
    local ok, e2 = pcall(function() return p:eval("to_guest", FRAME) end)
    assert.is_true(ok, e2)
  end)

  it("gives each hook a sandbox of its own, apart from the file's", function()
    local v, errors = verdicts([[
string.upper = function() return "x" end
G = "file"
rule { name = "a", action = "lua", hook = function(pkt)
  H = "a"; string.lower = nil
  return nil end }
rule { name = "b", action = "lua", hook = function(pkt)
  if H == nil and G == nil and ("ab"):upper() == "AB" and string.lower("A") == "a" then
    return "drop" end
  return "pass" end }
]])
    assert.same({ "drop" }, v)
    assert.equal(0, errors)
  end)

  it("refuses what it cannot recompile exactly, and says so", function()
    local _, err = verdicts([[
local X <const> = "drop"
local y = 1
rule { name = "h", action = "lua", hook = function(pkt) return X, y end }
]])
    assert.truthy(err:find("hooks.lua:3: hook: netbe cannot find this hook's source text exactly",
                           1, true), err)
    _, err = verdicts([[
local M = {}
function M:hook(pkt) return "drop" end
rule { name = "h", action = "lua", hook = M.hook }
]])
    assert.truthy(err:find("hooks.lua:3: hook: netbe cannot find this hook's source text exactly",
                           1, true), err)
  end)

  it("takes hooks as source text, and closures of the caller's own state", function()
    local limit = 59
    local p = assert(policy.compile{ default = "pass", rules = {
      { name = "text", action = "lua", hook = "return function(pkt) return nil end" },
      { name = "closure", action = "lua", hook = function(pkt)
          if pkt.len > limit then return "drop" end
        end } } })
    assert.equal("drop", p:eval("to_guest", FRAME))
    local f = load("return function(pkt) return 'drop' end", "=generated")()
    local q, err = policy.compile{ rules = { { action = "lua", hook = f } } }
    assert.is_nil(q)
    assert.equal("rules[1]: rule 1: hook: its source text is not at hand (chunk generated)", err)
  end)
end)

describe("the sandbox's bounded library", function()
  -- Evaluate the list of expressions CASES in a sandbox (through a file)
  -- and here, with Lua's own functions; the results must be the same.
  local function same_as_lua(cases)
    local body = {}
    for i, c in ipairs(cases) do
      body[#body + 1] = ("R[%d] = { %s }"):format(i, c)
    end
    local text = "R = {}\n" .. table.concat(body, "\n") .. "\nreturn R\n"
    local res = assert(netbe.run_file(write("lib.lua", text)))
    local env = setmetatable({}, { __index = _G })
    local want = load(text, "=lib", "t", env)()
    for i, c in ipairs(cases) do
      assert.same(want[i], res.value[i], c)
    end
  end

  -- Run "local x = EXPR" in a sandbox: it must fail with Lua's own message.
  local function same_error(expr)
    local text = "local x = " .. expr .. "\n"
    local _, err = netbe.run_file(write("err.lua", text))
    local _, want = pcall(load(text, "@" .. tmp .. "/err.lua"))
    assert.equal(want, err, expr)
  end

  it("matches patterns as Lua does", function()
    same_as_lua({
      "('hello world'):find('o w')", "('hello world'):find('o', 6)", "('hello'):find('l', -2)",
      "('hello'):find('', 10)", "('hello'):find('', 6)", "('a.b'):find('.', 1, true)",
      "('a+b'):find('+', 1, true)", "('abc'):find('b', -100)",
      "('hello world'):match('^(%w+)')", "('  key = value  '):match('^%s*(%S+)%s*=%s*(%S+)%s*$')",
      "('10.0.0.1'):match('^(%d+)%.(%d+)%.(%d+)%.(%d+)$')", "('abc'):match('()b()')",
      "('THE (quick) fox'):find('%((%a+)%)')", "('[[x]]'):match('%[(%b[])%]')",
      "('f(a(b)c)d'):match('%b()')", "('THE quick'):find('%f[%a]%a+', 4)",
      "('hello'):match('.-(l+)(.*)')", "('aaa'):match('a-b')", "('aaab'):match('a-b')",
      "('xyzzy'):match('(z+)%1')", "('abab'):match('(ab)%1')", "('x'):match('x?x?x')",
      "('abc'):match('[a-b]+')", "('a-c'):match('[a%-c]+')", "('a]b'):match('[]]')",
      "('^a'):match('[%^]a')", "('a$b'):match('a$b')", "('ab'):match('b$')",
      "('aXb'):match('%u')", "('a1 _'):match('[%W]+')", "('\\0a\\0'):match('%z?a')",
      "('día'):match('[\\128-\\255]+')", "('a.b.c'):gsub('%.', '/')",
      "('hello world'):gsub('o', {o = '0'})", "('abc'):gsub('%w', '%0%0')",
      "('abc'):gsub('', '-')", "('hello'):gsub('l+', function(s) return #s end)",
      "('x = 1, y = 2'):gsub('(%w+) = (%w+)', '%2 = %1')", "('abc'):gsub('b', '%%')",
      "('abc'):gsub('.', {a = 1, b = 'B', c = false})", "('abc'):gsub('^a', 'A')",
      "('aaa'):gsub('a', 'b', 2)", "('abc'):gsub('()', '%1')", "('a,b,,c'):gsub(',', ';', 0)",
    })
  end)

  it("iterates with gmatch as Lua does", function()
    same_as_lua({
      "(function() local t = {} for w in ('one two  three'):gmatch('%a+') do t[#t+1] = w end return table.concat(t, '|') end)()",
      "(function() local t = {} for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do t[#t+1] = k .. v end return table.concat(t) end)()",
      "(function() local t = {} for p in ('abc'):gmatch('()') do t[#t+1] = p end return table.concat(t, ',') end)()",
      "(function() local t = {} for w in ('abcabc'):gmatch('b', 3) do t[#t+1] = w end return #t end)()",
      "(function() local t = {} for w in ('abc'):gmatch('x*') do t[#t+1] = w end return #t end)()",
    })
  end)

  it("repeats, moves, inserts, removes and sorts as Lua does", function()
    same_as_lua({
      "('ab'):rep(3, ', ')", "('x'):rep(0)", "('x'):rep(-1)", "(''):rep(5)", "(''):rep(3, '-')",
      "table.unpack(table.move({1, 2, 3, 4, 5}, 2, 4, 1))",
      "table.unpack(table.move({1, 2, 3, 4, 5}, 1, 3, 3))",
      "table.unpack(table.move({1, 2, 3}, 1, 3, 2, {}))", "#table.move({}, 1, 0, 1)",
      "(function() local t = {1, 2, 3} table.insert(t, 2, 9) table.insert(t, 7) return table.unpack(t) end)()",
      "(function() local t = {1, 2, 3} local r = table.remove(t, 1) return r, table.unpack(t) end)()",
      "(function() local t = {1, 2, 3} local r = table.remove(t) return r, #t end)()",
      "(function() local t = {} return table.remove(t), table.remove(t, 1), #t end)()",
      "(function() local t = {3, 1, 2} table.sort(t) return table.unpack(t) end)()",
      "(function() local t = {'b', 'a', 'c'} table.sort(t, function(x, y) return x > y end) return table.concat(t) end)()",
    })
  end)

  it("agrees with Lua on 3000 random patterns, subjects and start positions", function()
    local atoms = { "a", "b", ".", "%a", "%d", "%s", "%w", "[ab]", "[^a]", "[a-c]", "[%d ]",
                    "%(", "%%", "%b()", "%f[%a]", "%f[%A]", "%1", "()", "x" }
    local quants = { "", "", "", "*", "+", "-", "?" }
    local chars = { "a", "b", "c", "1", " ", "(", ")", "x" }
    local rng = 12345
    local function rand(n) rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n + 1 end
    local function pattern()
      local parts, open = { rand(4) == 1 and "^" or "" }, 0
      for _ = 1, rand(5) do
        local r = rand(10)
        if r == 1 then parts[#parts + 1] = "("; open = open + 1
        elseif r == 2 and open > 0 then parts[#parts + 1] = ")"; open = open - 1
        else parts[#parts + 1] = atoms[rand(#atoms)] .. quants[rand(#quants)] end
      end
      parts[#parts + 1] = (")"):rep(open) .. (rand(4) == 1 and "$" or "")
      return table.concat(parts)
    end
    local cases, failing = {}, {}
    for _ = 1, 3000 do
      local subject = {}
      for i = 1, rand(12) - 1 do subject[i] = chars[rand(#chars)] end
      local args = ("%q, %q, %d"):format(table.concat(subject), pattern(), rand(16) - 8)
      for _, form in ipairs({ "string.find(%s)", "string.match(%s)",
                              "(string.gsub(%s, '<%%0>'))", "(string.gsub(%s, '%%1'))" }) do
        local expr = form:format(args)
        if form:find("gsub") then expr = expr:gsub(", %-?%d+, '", ", '") end
        if pcall(load("return " .. expr)) then cases[#cases + 1] = expr
        elseif #failing < 40 then failing[#failing + 1] = expr end
      end
    end
    assert.is_true(#cases > 5000 and #failing == 40, #cases .. " " .. #failing)
    same_as_lua(cases)
    for _, c in ipairs(failing) do same_error(c) end
  end)

  it("raises Lua's own errors for bad patterns and arguments", function()
    for _, c in ipairs({ "('a'):find('[a')", "('a'):find('%')", "('a'):match('(()')",
                         "('a'):match('%1')", "('a'):gsub('a', '%2')", "('a'):gsub('a', '%x')",
                         "('a'):match('%b')", "('a'):match('%f')", "('a'):match(')')",
                         "table.insert({}, 5, 1)", "table.insert({}, 1, 2, 3)",
                         "table.move({}, 1, math.maxinteger, 2)",
                         "('x'):rep(math.maxinteger, 'yy')" }) do
      same_error(c)
    end
  end)
end)
