-- `netbe serve` adding and removing NICs through its control socket 100
-- times leaks nothing: no descriptor (/proc/PID/fd) and no memory
-- (LeakSanitizer at exit). serve runs the netbe module built with ASan and
-- UBSan (build/fuzz/lua/netbe.so, the Lua fuzzer's), ASan's runtime
-- preloaded into lua5.4, in a namespace of its own with only a loopback:
-- its taps live there and slirp has no route off the machine.
local ns = require("ns")
local json = require("dkjson")
local netbe = require("netbe")

local ROUNDS = 100
local MODULE = "build/fuzz/lua/netbe.so"

-- The ASan runtime that lua5.4, not built with ASan, must preload.
local function asan_runtime()
  local ok, out = ns.sh("clang -print-file-name=libclang_rt.asan-x86_64.so")
  local path = ok and out:match("^(/%S+)")
  return path and ns.sh("test -f " .. path) and path or nil
end

local skip = ns.skip_unless_root("clang", "make")
local runtime = not skip and asan_runtime()
if not skip and not runtime then skip = "no ASan runtime (clang -print-file-name)" end

-- Run before scripts/netbe: the module is the ASan build (preload is
-- searched before the cpath scripts/netbe sets), and os.exit closes the
-- Lua state, so that at exit Lua's heap is freed and every finalizer has
-- run: what LeakSanitizer finds allocated then is lost for good. Closing
-- the state would also unload the module, and LeakSanitizer's stacks
-- would then name none of its functions: the table of loaded C libraries
-- loses its finalizer.
local PRELUDE = [[
package.preload.netbe = assert(package.loadlib(%q, "luaopen_netbe"))
setmetatable(assert(debug.getregistry()._CLIBS, "no _CLIBS in Lua's registry"), nil)
local exit = os.exit
os.exit = function(status) exit(status, true) end
]]

-- A policy with a counting rule, a rate limit and a Lua hook (each hook
-- gets a sandbox state of its own).
local POLICY = [[
settings { default = "pass", fail = "closed" }
rule { name = "arp", ethertype = "arp", action = "count" }
rule { name = "limit", dir = "to_guest", action = "rate", rate = "10mbit", burst = "64kb" }
rule { name = "big", action = "lua",
       hook = function(pkt) if pkt.len > 9000 then return "drop" end end }
]]

-- `netbe serve` in namespace N, under ASan; returns a handle with the
-- lua5.4 process's pid, its log, the control socket and the file its exit
-- status goes to.
local function start_serve(n)
  local dir = ns.tmpdir()
  local srv = { dir = dir, sock = dir .. "/ctl.sock", status = dir .. "/status" }
  local prelude = PRELUDE:format(ns.root .. "/" .. MODULE)
  local cmd = string.format("cd %s && env LD_PRELOAD=%s "
    .. "ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 "
    .. "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "
    .. "lua5.4 -e %s scripts/netbe serve --control unix:%s --allow-files %s; echo $? >%s",
    ns.quote(ns.root), ns.quote(runtime), ns.quote(prelude), srv.sock, dir, srv.status)
  local sh, log = n:spawn(cmd)
  srv.log = log
  assert(ns.wait_for(function() return ns.sh("test -S " .. srv.sock) end, 20),
         "no control socket: " .. ns.read(log))
  -- lua5.4 is the shell's only child: the shell stays to write its status.
  srv.pid = tonumber(ns.read("/proc/" .. sh .. "/task/" .. sh .. "/children"):match("%d+"))
  assert(srv.pid, "serve's process not found under " .. sh)
  return srv
end

-- The answer of SRV to CMD with ARGS; an error answer fails the test. A
-- crash under ASan shows as a refused connection, its report in the log.
local function call(srv, cmd, args)
  local req = json.encode({ execute = cmd, arguments = args }) .. "\n"
  local out, err = netbe.control_call(srv.sock, req, 10)
  assert(out, "control socket: " .. tostring(err) .. "\n" .. ns.read(srv.log))
  local a = assert(json.decode(out), out)
  assert(a["return"], cmd .. ": " .. out)
  return a["return"]
end

-- The descriptors open in PID: a sorted list of "N -> TARGET".
local function fds(pid)
  local cmd = 'cd /proc/%d/fd && for f in *; do echo "$f -> $(readlink $f)"; done'
  local ok, out = ns.sh(cmd:format(pid))
  assert(ok, out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line end
  table.sort(list)
  return list
end

describe("netbe serve under ASan #ns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("adds and removes tap and slirp NICs 100 times, leaking no descriptor or memory", function()
    local ok, out = ns.sh("make -s --no-print-directory -C " .. ns.quote(ns.root) .. " " .. MODULE)
    assert(ok, "make " .. MODULE .. ": " .. out)
    local n = ns.new("lk")
    local srv = start_serve(n)
    local maps = ns.read("/proc/" .. srv.pid .. "/maps")
    assert.truthy(maps:find("/" .. MODULE, 1, true), "serve does not run the ASan module")
    assert.truthy(maps:find("libclang_rt.asan", 1, true), "serve runs without ASan's runtime")
    local policy = ns.write(srv.dir .. "/policy.lua", POLICY)
    local tap = ns.unique("tap")
    local before = fds(srv.pid)
    for i = 1, ROUNDS do
      -- Every round both kinds; the policy file goes to one of them in turn.
      local pol_t, pol_s = i % 2 == 0 and policy or nil, i % 2 == 1 and policy or nil
      assert.equal("t", call(srv, "nic_add", { name = "t", a = tap, b = "null",
                                               policy = pol_t }).nic)
      assert.equal("s", call(srv, "nic_add", { name = "s", a = "slirp", b = "null",
                                               policy = pol_s }).nic)
      local st = call(srv, "stats", { nic = "t" }).nics[1]
      assert.same({ "up", "tap", "null" }, { st.state, st.a.type, st.b.type })
      st = call(srv, "stats", { nic = "s" }).nics[1]
      assert.same({ "up", "slirp", "null" }, { st.state, st.a.type, st.b.type })
      assert.is_true(ns.sh("ip -n " .. n.name .. " link show " .. tap), "round " .. i .. ": no tap")
      -- A forward listens on the namespace's loopback; the same port each
      -- round, so a listener left open would make the next one fail.
      assert.equal(1, call(srv, "hostfwd_add", { nic = "s", rule = "tcp:127.0.0.1:2222-:22" }).id)
      local ps = call(srv, "policy_stats", { nic = pol_t and "t" or "s" })
      assert.same({ 3, "big" }, { #ps.rules, ps.rules[3].name })
      call(srv, "nic_remove", { name = "t" })
      call(srv, "nic_remove", { name = "s" })
      assert.is_false(ns.sh("ip -n " .. n.name .. " link show " .. tap),
                      "round " .. i .. ": the tap outlived its NIC")
    end
    assert.same({}, call(srv, "stats").nics)
    local after = fds(srv.pid)
    assert.equal(#before, #after, "descriptors before:\n" .. table.concat(before, "\n")
                 .. "\nafter:\n" .. table.concat(after, "\n"))
    -- SIGTERM: serve's normal way out, then LeakSanitizer at exit.
    ns.sh("kill -TERM " .. srv.pid)
    assert(ns.wait_for("test -s " .. srv.status, 60), "serve did not exit: " .. ns.read(srv.log))
    local log = ns.read(srv.log)
    assert.falsy(log:find("Sanitizer", 1, true), log)
    assert.falsy(log:find("runtime error", 1, true), log)
    assert.matches("serve: stopped by SIGTERM", log)
    assert.equal("0", ns.read(srv.status):match("%d+"), log)
  end)
end)
