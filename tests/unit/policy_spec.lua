-- The policy language through netbe.policy: compiler errors with file, line
-- and reason; evaluation from Lua; a wire over pair backends with reloads
-- that keep the old rules on failure and carry counters over by name.
local netbe = require "netbe"
local policy = require "netbe.policy"
local ns = require "ns"

local tmp = ns.tmpdir()

local function write(name, text) return ns.write(tmp .. "/" .. name, text) end

local GUEST = "\x52\x54\x00\x12\x34\x56"
local HOST = "\x02\x00\x00\x00\x00\x01"

-- A UDP/IPv4 frame from SRC_MAC/SRC_IP to DPORT.
local function udp(src_mac, src_ip, dport)
  local a, b, c, d = src_ip:match("(%d+)%.(%d+)%.(%d+)%.(%d+)")
  local ip = "\x45\0\0\28\0\0\0\0\64\17\0\0" .. string.char(a, b, c, d) .. "\10\0\0\1"
  return HOST .. src_mac .. "\8\0" .. ip .. string.pack(">I2I2I2I2", 5000, dport, 8, 0)
end

teardown(ns.cleanup)

describe("policy compiler", function()
  it("compiles every example policy", function()
    local _, out = ns.sh("ls examples/policies/*.lua")
    local n = 0
    for path in out:gmatch("%S+") do
      local p, e = policy.load(path)
      assert.is_not_nil(p, e)
      n = n + 1
    end
    assert.is_true(n >= 5)
  end)

  local cases = {
    { "syntax", "settings { default = 'pass' }\nrule { name = 'a' \n",
      ":3: '}' expected .-near <eof>" },
    { "unknown field", "settings {}\n\nrule { name = 'a', dprot = 22 }\n",
      ":3: rule 'a': unknown field 'dprot' %(expected one of: name, dir," },
    { "bad prefix", "rule { name = 'ok' }\nrule { name = 'b',\n src_ip = '10.0.0.300/24' }\n",
      ":2: rule 'b': src_ip '10.0.0.300/24': bad address %(expected A.B.C.D%[/0%-32%]" },
    { "host bits", "rule { src_ip = '10.0.0.1/8' }\n",
      ":1: rule 1: src_ip '10.0.0.1/8': bits set beyond the /8 prefix %(expected the network address%)" },
    { "prefix too long", "rule { dst_ip = 'fd00::/129' }\n",
      ":1: rule 1: dst_ip 'fd00::/129': prefix length 129 is over 128" },
    { "bad ipv6", "rule { dst_ip = 'fd00:::1' }\n", ":1: rule 1: dst_ip 'fd00:::1': bad address" },
    { "port range", "\n\nrule { proto = 'tcp', dport = '90-80' }\n",
      ":3: rule 1: dport '90%-80': expected a number, {low, high} or \"low%-high\" within 0%-65535" },
    { "ports without them", "rule { name = 'x', proto = 'icmp', dport = 22 }\n",
      ":1: rule 'x': ports need proto tcp, udp, sctp or udplite, not 1" },
    { "action", "rule { name = 'x', action = 'reject' }\n",
      ":1: rule 'x': action \"reject\": expected one of count, drop, lua, pass, rate" },
    { "rate unit", "rule { action = 'rate', rate = '10 furlongs' }\n",
      ":1: rule 1: rate '10 furlongs': expected a positive number with a unit" },
    { "mac", "rule { src_mac = '52:54:00:12:34' }\n",
      ":1: rule 1: src_mac '52:54:00:12:34': expected xx:xx:xx:xx:xx:xx" },
    { "dir", "rule { dir = 'inbound' }\n", ":1: rule 1: dir \"inbound\": expected to_guest or from_guest" },
    { "duplicate", "rule { name = 'a' }\nrule { name = 'a' }\n",
      ":2: rule 'a': name already used by rule 1" },
    { "setting", "settings { defualt = 'drop' }\n",
      ":1: unknown setting 'defualt' %(expected one of: default, fail, hook_budget, hook_memory, hook_time%)" },
    { "hook capture", "local function f() end\nrule { action = 'lua', hook = function() return f() end }\n",
      ":2: hook: captured 'f': a function %(expected strings, numbers, booleans and tables of them%)" },
    { "hook from elsewhere", "rule { action = 'lua', hook = string.len }\n",
      ":1: hook: only a Lua function written in this file can be a hook" },
    { "hook memory", "settings { hook_memory = '99999999999999999999 kb' }\n",
      ":1: hook_memory \"99999999999999999999 kb\": expected 64 kb to 64 mb" },
    { "hook time", "settings { hook_time = '2 s' }\n",
      ":1: hook_time \"2 s\": expected 10 us to 1 s" },
    { "hook missing", "rule { action = 'lua' }\n", ":1: rule 1: hook: expected a function%(pkt%)" },
    { "family mix", "rule { src_ip = '10.0.0.0/8', dst_ip = 'fd00::/8' }\n",
      ":1: rule 1: src_ip and dst_ip must be of one family" },
    { "sandboxed file", "os.execute('true')\n", ":1: attempt to index a nil value %(global 'os'%)" },
    { "endless file", "rule {}\nwhile true do end\n", ":2: ran past its time bound of 1 s" },
    { "hungry file", "local t = {}\nwhile true do t[#t + 1] = {} end\n",
      ": went over its memory bound of 64 MiB" },
  }
  for _, c in ipairs(cases) do
    it("rejects " .. c[1] .. " with the line and the reason", function()
      local path = write(c[1]:gsub(" ", "_") .. ".lua", c[2])
      local p, err = policy.load(path)
      assert.is_nil(p)
      assert.is_string(err)
      assert.truthy(err:find(path, 1, true), err)
      assert.truthy(err:find(c[3]), "got: " .. err)
    end)
  end

  it("takes a table and names the rule by position", function()
    local p, err = policy.compile{ rules = { { proto = "tcp" }, { proto = "tcpp" } } }
    assert.is_nil(p)
    assert.truthy(err:find("rules%[2%]: rule 2: proto \"tcpp\": expected one of"), err)
    p = assert(policy.compile{ default = "drop", rules = { { dst_ip = "10.0.0.1" } } })
    assert.equal("pass", p:eval("to_guest", udp(GUEST, "10.0.0.2", 53)))
    p = assert(policy.compile{ default = "drop", rules = { { dst_ip = "10.0.0.9" } } })
    assert.equal("drop", p:eval("to_guest", udp(GUEST, "10.0.0.2", 53)))
  end)
end)

describe("policy fields", function()
  -- A value of each kind as a policy file writes it.
  local SAMPLE = { NAME = "from_guest", ENUM = 17, TAG = "none", RANGE = "10-20", FLAGS = "syn,!ack",
                   MAC = "52:54:00:00:00:00/24", PREFIX = "10.0.0.0/8" }

  it("come from netbe's table, one per match bit in bit order", function()
    assert.is_true(#netbe.policy_fields >= 13)
    local seen = {}
    for i, f in ipairs(netbe.policy_fields) do
      assert.equal(1 << (i - 1), f.bit, f.name)
      assert.is_nil(seen[f.name], f.name)
      seen[f.name] = true
      assert.is_not_nil(SAMPLE[f.kind], f.name .. ": kind " .. tostring(f.kind))
      assert.is_true(#f.members >= 1 and #f.members <= 3, f.name)
    end
    assert.same({ "dport_lo", "dport_hi" }, netbe.policy_fields[10].members)
    assert.equal(6, netbe.policy_fields[8].names.tcp)
  end)

  it("are each compiled into exactly the members netbe lists", function()
    for _, f in ipairs(netbe.policy_fields) do
      local d = assert(policy.parse{ rules = { { name = "r", [f.name] = SAMPLE[f.kind] } } })
      local r, want = d.rules[1], { name = true, action = true }
      for _, m in ipairs(f.members) do
        assert.is_not_nil(r[m], f.name .. " fills " .. m)
        want[m] = true
      end
      for k in pairs(r) do assert.is_true(want[k], f.name .. " fills only its members, not " .. k) end
      assert.is_not_nil(netbe.policy_new{ rules = { r } }, f.name)
    end
  end)

  it("all show in a hook's packet view", function()
    local names = {}
    for i, f in ipairs(netbe.policy_fields) do names[i] = f.name end
    -- A UDP frame carries every field but tcp_flags, icmp_type and (untagged) vlan.
    local p = assert(policy.compile{ default = "pass", rules = { { action = "lua",
      hook = "local names = {" .. ("%q, "):rep(#names):format(table.unpack(names)) .. "}\n" ..
             "return function(pkt) local n = 0\n" ..
             "for _, k in ipairs(names) do if pkt[k] ~= nil then n = n + 1 end end\n" ..
             "if n == #names - 3 and pkt.tcp_flags == nil and pkt.icmp_type == nil and " ..
             "pkt.vlan == nil then return 'drop' end end" } } })
    assert.equal("drop", p:eval("to_guest", udp(GUEST, "10.0.0.2", 53)))
    assert.equal(0, p:stats().hook_errors)
  end)
end)

describe("policy messages", function()
  -- Every message must be one line: control characters as '?' (as netbe.c
  -- writes them), or escaped where a value is quoted as Lua would read it.
  local function one_line(err)
    assert.is_string(err)
    assert.is_nil(err:find("%c"), "a control character in: " .. err)
  end

  it("stay one line whatever the file's values and names hold", function()
    local cases = {
      { "rule { name = 'r', action = 'rate', rate = 'a\\nb' }\n", "rate 'a?b'" },
      { "rule { name = 'r', action = 'x\\ny' }\n", [[action "x\ny": expected]] },
      { "rule { name = 'r', dir = 'a\\r\\nb' }\n", [[dir "a\13\nb": expected]] },
      { "rule { name = 'r', ['x\\ny'] = 1 }\n", "unknown field 'x?y'" },
      { "rule { name = 'a\\nb' }\n", [[name "a\nb": expected 1-63]] },
      { "settings { ['a\\nb'] = 1 }\n", "unknown setting 'a?b'" },
      { "settings { default = 'x\\0\\n' }\n", [[default "x\0\n": expected pass or drop]] },
      { "error('a\\nb\\tc')\n", ":1: a?b?c" },
    }
    for _, c in ipairs(cases) do
      local path = write("ctl.lua", c[1])
      local p, err = policy.load(path)
      assert.is_nil(p)
      one_line(err)
      assert.truthy(err:find(c[2], 1, true), "expected '" .. c[2] .. "' in: " .. err)
    end
  end)

  it("stay one line from a table and from netbe.policy_new", function()
    local p, err = policy.compile{ rules = { { name = "r", proto = "t\ncp" } } }
    assert.is_nil(p)
    one_line(err)
    assert.truthy(err:find([[proto "t\ncp": expected one of]], 1, true), err)
    p, err = netbe.policy_new{ rules = { { name = "a\nb", action = 1, ["x\ry"] = 1 } } }
    assert.is_nil(p)
    one_line(err)
    assert.truthy(err:find("rule 'a?b': unknown field 'x?y'", 1, true), err)
  end)
end)

describe("policy evaluation from Lua", function()
  it("matches, counts and calls hooks with a view of the packet", function()
    local port = 9
    local p = assert(policy.compile{ default = "pass", rules = {
      { name = "spoof", dir = "from_guest", src_ip = "10.0.0.0/24", action = "count" },
      { name = "discard", proto = "udp", dport = 9, action = "drop" },
      { name = "hook", action = "lua", hook = function(pkt)
          if pkt.dport == port + 1 and pkt:u16(12) == 0x0800 then return "drop" end
        end },
    } })
    assert.equal("drop", p:eval("from_guest", udp(GUEST, "10.0.0.2", 9)))
    assert.equal("drop", p:eval("from_guest", udp(GUEST, "10.0.0.2", 10)))
    assert.equal("pass", p:eval("from_guest", udp(GUEST, "10.0.1.2", 11)))
    local st = p:stats()
    assert.same({ 2, 1, 1, 1, 1 }, { st.rules[1].hits, st.rules[2].hits, st.rules[2].drops,
                                     st.rules[3].hits - 1, st.rules[3].drops })
    assert.equal(2, st.from_guest.drop_frames)
    assert.equal(1, st.from_guest.pass_frames)
    assert.equal(0, st.hook_errors)
  end)

  it("gives a runaway hook the fail verdict and counts an error", function()
    local p = assert(policy.compile{ fail = "closed", hook_budget = 1000, rules = {
      { action = "lua", hook = function() while true do end end } } })
    assert.equal("drop", p:eval("to_guest", udp(GUEST, "10.0.0.2", 1)))
    p = assert(policy.compile{ fail = "open", rules = {
      { action = "lua", hook = function() error("broken") end } } })
    assert.equal("pass", p:eval("to_guest", udp(GUEST, "10.0.0.2", 1)))
    assert.equal(1, p:stats().hook_errors)
  end)
end)

describe("policy on a wire", function()
  local uid = 0
  local function pairs_wire()
    uid = uid + 1
    local tag = string.format("pol-%d-%d", math.floor(os.time() % 100000), uid)
    local host, host_w = netbe.open("pair,name=" .. tag .. "h"), netbe.open("pair,name=" .. tag .. "h")
    local guest, guest_w = netbe.open("pair,name=" .. tag .. "g"), netbe.open("pair,name=" .. tag .. "g")
    return host, guest, netbe.wire(host_w, guest_w)
  end

  local function drain(be)
    local n = 0
    for _ = 1, 20 do
      netbe.step(0.01)
      while be:recv() do n = n + 1 end
    end
    return n
  end

  it("drops what the rules drop, keeps the old rules when a reload fails, carries counters", function()
    local host, guest, w = pairs_wire()
    local good = write("wire.lua", [[
      rule { name = "discard", proto = "udp", dport = 9, action = "drop" }
      rule { name = "seen", dir = "from_guest", action = "count" }
    ]])
    assert.equal(2, policy.apply(w, good))
    for i = 1, 10 do guest:send(udp(GUEST, "10.0.0.2", i % 2 == 0 and 9 or 53)) end
    assert.equal(5, drain(host))
    local st = w:policy_stats()
    assert.same({ 5, 5, 5 }, { st.rules[1].drops, st.rules[2].hits, st.from_guest.pass_frames })

    local bad = write("bad.lua", "rule { name = 'discard', dport = 'nine' }\n")
    local n, err = policy.apply(w, bad)
    assert.is_nil(n)
    assert.truthy(err:find("bad.lua:1: rule 'discard': dport 'nine'", 1, true), err)
    for _ = 1, 4 do guest:send(udp(GUEST, "10.0.0.2", 9)) end
    assert.equal(0, drain(host))
    st = w:policy_stats()
    assert.equal(9, st.rules[1].drops)
    assert.equal(0, st.reloads)

    local renamed = write("renamed.lua", [[
      rule { name = "new-first", proto = "udp", dport = 53, action = "count" }
      rule { name = "discard", proto = "udp", dport = 9, action = "drop" }
    ]])
    assert.equal(2, policy.apply(w, renamed))
    guest:send(udp(GUEST, "10.0.0.2", 9))
    guest:send(udp(GUEST, "10.0.0.2", 53))
    assert.equal(1, drain(host))
    st = w:policy_stats()
    assert.equal("new-first", st.rules[1].name)
    assert.equal(1, st.rules[1].hits)
    assert.equal(10, st.rules[2].drops, "discard carried its 9 drops over by name")
    assert.equal(10, st.from_guest.drop_frames, "direction totals carried over")
    assert.equal(1, st.reloads)
    -- to_guest is the other direction: nothing seen there.
    host:send(udp(HOST, "10.0.0.1", 53))
    assert.equal(1, drain(guest))
    assert.equal(1, w:policy_stats().to_guest.pass_frames)
    w:set_policy(nil)
    netbe.step(0.01)
    assert.is_nil(w:policy_stats())
    w:close()
  end)

  it("refuses to read a policy handed to a wire", function()
    local _, _, w = pairs_wire()
    local p = assert(policy.compile{ rules = {} })
    w:set_policy(p)
    assert.has_error(function() p:stats() end,
      "netbe: this policy was given to a wire; read wire:policy_stats()")
    w:close()
  end)
end)

describe("netbe wire --policy", function()
  local function sh(cmd) return select(2, ns.sh(cmd)) end
  -- The file at PATH once it holds TEXT, or nil and what it holds.
  local function wait_for(path, text)
    if ns.wait_for(function() return ns.read(path):find(text, 1, true) end, 5) then
      return ns.read(path)
    end
    return nil, ns.read(path)
  end

  it("reloads on SIGHUP, keeps the rules in force when the file is broken, prints counters", function()
    local file = write("cli.lua", "rule { name = 'one', action = 'count' }\n")
    -- ns.spawn: the cleanup stops it even when an assertion fails.
    local pid, log = ns.spawn("exec " .. ns.netbe .. " wire null null --policy " .. file)
    assert.truthy(wait_for(log, "until SIGINT or SIGTERM"))
    write("cli.lua", "rule { name = 'one', action = 'count' }\nrule { name = 'two', proto = 'tcpx' }\n")
    os.execute("kill -HUP " .. pid)
    local s, got = wait_for(log, "reload failed")
    assert.truthy(s, got)
    assert.truthy(s:find("netbe: wire: policy reload failed, keeping the rules in force: " ..
                         file .. ":2: rule 'two': proto \"tcpx\": expected one of", 1, true), s)
    write("cli.lua", "rule { name = 'one' }\nrule { name = 'two' }\nrule { name = 'three' }\n")
    os.execute("kill -HUP " .. pid)
    assert.truthy(wait_for(log, "reloaded, 3 rules"))
    os.execute("kill -TERM " .. pid)
    s = assert(wait_for(log, "frames dropped by the wire"))
    assert.truthy(s:find("policy hook_errors=0 reloads=1 rules=3", 1, true), s)
    assert.truthy(s:find("policy rule three", 1, true), s)
  end)

  it("keeps running with the old rules when a reloaded setting is out of range (SIGHUP)", function()
    local file = write("float.lua", "rule { name = 'one', action = 'count' }\n")
    local pid, log = ns.spawn("exec " .. ns.netbe .. " wire null null --policy " .. file)
    assert.truthy(wait_for(log, "until SIGINT or SIGTERM"))
    write("float.lua", "settings { hook_memory = '99999999999999999999 kb' }\n" ..
                       "rule { name = 'two', action = 'count' }\n")
    os.execute("kill -HUP " .. pid)
    local s, got = wait_for(log, "reload failed")
    assert.truthy(s, got)
    assert.truthy(s:find("netbe: wire: policy reload failed, keeping the rules in force: " .. file ..
                         ":1: hook_memory \"99999999999999999999 kb\": expected 64 kb to 64 mb",
                         1, true), s)
    ns.sh("sleep 0.3")
    assert.is_true(ns.alive(pid), ns.read(log))
    os.execute("kill -TERM " .. pid)
    s = assert(wait_for(log, "frames dropped by the wire"))
    assert.truthy(s:find("policy hook_errors=0 reloads=0 rules=1", 1, true), s)
    assert.truthy(s:find("policy rule one", 1, true), s)
  end)

  it("refuses to start with a broken policy and says where", function()
    local file = write("broken.lua", "rule { name = 'x', src_ip = '10.0.0.1/33' }\n")
    local out = sh("scripts/netbe wire null null --policy " .. file .. " 2>&1; echo status=$?")
    assert.truthy(out:find(file .. ":1: rule 'x': src_ip '10.0.0.1/33': prefix length 33 is over 32",
                           1, true), out)
    assert.truthy(out:find("status=1", 1, true), out)
  end)
end)
