-- The control socket under load: `netbe wire TAP slirp` answers 1000
-- requests while the guest sends 4 MiB through it. The wire runs in a host
-- namespace with only a loopback (no route off the machine), the tap in a
-- guest namespace; the guest sends to a listener on the host namespace's
-- loopback through 10.0.2.2. The sender is paced over a few seconds, and
-- the wire's own counters, read by the stats requests of the burst, show
-- that the bytes were moving while the requests were answered.
local ns = require("ns")
local json = require("dkjson")
local netbe = require("netbe")
local sl = require("slirpns")
local cc = require("control_client")
local tcpxfer = require("tcpxfer")

local skip = ns.skip_unless_root("busybox", "python3", "ss")

local SIZE = 4 * 1024 * 1024
local PORT = 7200                 -- the listener on the host namespace's loopback
local FWD_PORT = 30000            -- forwards added and removed: FWD_PORT + cycle
local REQUESTS = 1000

-- Bad requests, one a cycle in turn (see STEPS), and what each error's desc says.
local BAD = {
  { "{not json", "cannot parse JSON" },
  { '{"execute": "reboot"}', "unknown execute 'reboot'" },
  { '{"execute": "hostfwd_add", "arguments": {"rule": "tcp:127.0.0.1"}}', "expected PROTO:HADDR" },
  { '{"execute": "stats", "arguments": {"nic": "vm9"}}', "no NIC named 'vm9'" },
  { '{"execute": "remove_hostfwd", "arguments": {"id": 999999}}', "bad arguments.id" },
  { string.rep("x", 70000), "request longer than 65536 bytes" },
}

local function req(cmd, args)
  return json.encode({ execute = cmd, arguments = args })
end

-- The bytes the guest's side of the wire took from the tap, from a stats
-- answer R (its "return"), or nil.
local function guest_bytes(r)
  local nic = type(r) == "table" and type(r.nics) == "table" and r.nics[1]
  return nic and nic.a and nic.a.counters and nic.a.counters.rx_bytes
end

-- One cycle of requests, in order. Each makes its request line for cycle
-- C ({k, port, s4n, tap, id}: even cycles use netbe's hostfwd commands,
-- odd ones slirp4netns's) and checks the "return" of its answer (the
-- "error" for the bad one): true, or false and why.
local STEPS = {
  { stats = true, line = function() return req("stats") end,
    check = function(r) return guest_bytes(r) ~= nil, "no rx_bytes for the guest's side" end },
  { line = function(c)
      if c.s4n then
        return req("add_hostfwd", { proto = "tcp", host_addr = "127.0.0.1", host_port = c.port,
                                    guest_port = 22 })
      end
      return req("hostfwd_add", { rule = "tcp:127.0.0.1:" .. c.port .. "-:22" })
    end,
    check = function(r, c)
      c.id = math.tointeger(r.id)
      return c.id ~= nil, "no id"
    end },
  { line = function(c) return req(c.s4n and "list_hostfwd" or "hostfwd_list") end,
    check = function(r, c)
      local e = type(r.entries) == "table" and #r.entries == 1 and r.entries[1]
      return e and e.id == c.id and e.host_port == c.port, "not the one forward added"
    end },
  { line = function() return req("policy_stats") end,
    check = function(r)
      local rule = type(r.rules) == "table" and r.rules[1]
      return rule and rule.name == "count-all", "no rule count-all"
    end },
  { line = function() return req("features") end,
    check = function(r, c)
      return type(r.a) == "table" and r.a.name == c.tap and type(r.b) == "table"
             and r.b.name == "slirp",
             "not this wire's sides"
    end },
  { line = function() return req("version") end,
    check = function(r) return r.version == netbe.VERSION, "another version" end },
  { line = function() return req("metrics") end,
    check = function(r, c)
      local want = 'netbe_rx_bytes_total{nic="wire",side="a",backend="' .. c.tap .. '"} '
      return type(r.text) == "string" and r.text:find(want, 1, true) ~= nil, "no " .. want
    end },
  { line = function(c)
      return req(c.s4n and "remove_hostfwd" or "hostfwd_remove", { id = c.id })
    end,
    check = function(r) return next(r) == nil, "not an empty object" end },
  { bad = true, line = function(c) return BAD[c.k % #BAD + 1][1] end,
    check = function(e, c)
      local want = BAD[c.k % #BAD + 1][2]
      return e.desc:find(want, 1, true) ~= nil, "an error without '" .. want .. "'"
    end },
  { stats = true, line = function() return req("stats", { nic = "wire" }) end,
    check = function(r) return guest_bytes(r) ~= nil, "no rx_bytes for the guest's side" end },
}

-- Whether OUT, the whole text a request got back, is one well-formed
-- answer: one line, a JSON object with just "return" or just "error"
-- (an object with a desc). Returns its "return" or "error" and which,
-- or nil and why not.
local function answer_of(out)
  if not out:match("^[^\n]+\n$") then return nil, "not one line: " .. out:sub(1, 200) end
  local a = json.decode(out)
  if type(a) ~= "table" then return nil, "not a JSON object: " .. out:sub(1, 200) end
  local keys = 0
  for _ in pairs(a) do keys = keys + 1 end
  if keys ~= 1 then return nil, "not just return or error: " .. out:sub(1, 200) end
  if type(a.error) == "table" and type(a.error.desc) == "string" then return a.error, "error" end
  if a["return"] ~= nil then return a["return"], "return" end
  return nil, "neither return nor an error object: " .. out:sub(1, 200)
end

-- Send LINE, the request of STEP for cycle C, to SOCK; returns the kind
-- of its well-formed answer ("return" or "error"), what was wrong with
-- it (nil when nothing) and the answer's value, or nil and what was wrong.
local function send(sock, line, step, c)
  local out, e = netbe.control_call(sock, line .. "\n", 10)
  if not out then return nil, e end
  local a, kind = answer_of(out)
  if not a then return nil, kind end
  if (kind == "error") ~= (step.bad == true) then
    return kind, step.bad and "no error object for a bad request" or "an error: " .. a.desc
  end
  local ok, why = step.check(a, c)
  return kind, not ok and why or nil, a
end

-- Fire the REQUESTS at SOCK, cycle after cycle; returns the counts of
-- well-formed answers and of error objects, the problems seen, and each
-- stats answer's guest_bytes with its request's number.
local function burst(sock, tap)
  local answered, errors, problems, seen, c = 0, 0, {}, {}, { tap = tap }
  for n = 1, REQUESTS do
    local i = (n - 1) % #STEPS + 1
    if i == 1 then
      c.k = (n - 1) // #STEPS + 1
      c.port, c.s4n, c.id = FWD_PORT + c.k, c.k % 2 == 1, nil
    end
    local line = STEPS[i].line(c)
    local kind, why, a = send(sock, line, STEPS[i], c)
    answered = answered + (kind and 1 or 0)
    errors = errors + (kind == "error" and 1 or 0)
    if why then
      problems[#problems + 1] = ("request %d (%s): %s"):format(n, line:sub(1, 60), why)
    end
    if STEPS[i].stats and a then seen[#seen + 1] = { n = n, bytes = guest_bytes(a) } end
  end
  return answered, errors, problems, seen
end

describe("netbe wire --control under load", function()
  after_each(sl.stop_started)
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("answers 1000 requests while 4 MiB cross a tap<->slirp wire, and the data arrives intact",
     function()
    local dir = ns.tmpdir()
    local sock = dir .. "/ctl.sock"
    local pol = ns.write(dir .. "/p.lua", 'rule { name = "count-all", action = "count" }\n')
    local env = sl.wired("slirp,open", "--policy " .. pol .. " --control unix:" .. sock)
    cc.wait(sock, env.log)
    assert.is_not_nil(sl.dhcp(env))
    local done, result = tcpxfer.start(env.g, env.h, "10.0.2.2", PORT, SIZE,
                                       { listen = "127.0.0.1", seconds = 3 })
    assert.is_true(ns.wait_for(function()
      return (guest_bytes(cc.call(sock, "stats")["return"]) or 0) >= 256 * 1024
    end, 10), "the transfer did not start: " .. ns.read(env.log))

    local answered, errors, problems, seen = burst(sock, env.tap)
    assert.same({}, { table.unpack(problems, 1, 5) },
                #problems .. " answers were wrong (the first five shown)")
    assert.equal(REQUESTS, answered)
    assert.equal(REQUESTS // #STEPS, errors)

    -- The burst began before the last byte crossed, and the counters grew
    -- under it: the requests were answered while the data moved.
    local during, moved = 0, 0
    for _, s in ipairs(seen) do
      if s.bytes < SIZE then during, moved = s.n, s.bytes - seen[1].bytes end
    end
    assert.is_true(seen[1].bytes < SIZE, "the transfer had ended before the first request")
    assert.is_true(during >= 100, "only " .. during .. " requests were answered in the transfer")
    assert.is_true(moved > 0, "no bytes crossed the wire during the requests")

    assert.is_true(ns.wait_for(done, 30), "the transfer did not finish")
    local sent, got = result()
    assert.matches("^" .. SIZE .. " %x+$", sent or "", 1)
    assert.equal(sent, got, "the receiver's SHA-256 is not the sender's")

    assert.is_true(ns.alive(env.pid), "the wire died: " .. ns.read(env.log))
    local nic = cc.call(sock, "stats")["return"].nics[1]
    assert.equal("up", nic.state)
    assert.is_true(nic.a.counters.rx_bytes >= SIZE, "tap side took " .. nic.a.counters.rx_bytes)
    assert.is_true(nic.b.counters.tx_bytes >= SIZE, "slirp side got " .. nic.b.counters.tx_bytes)
    local counted = nic.policy.rules[1].bytes
    assert.is_true(counted >= SIZE, "the policy counted " .. counted)
    assert.same({}, cc.call(sock, "hostfwd_list")["return"].entries)
  end)
end)
