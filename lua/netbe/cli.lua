-- netbe.cli: the subcommands of the `netbe` command.
-- Each returns an exit status: 0 done, 1 failed, 2 bad usage.
local cmdline = require("netbe.cmdline")

local cli = {}
local fail = cmdline.fail

local USAGE = [==[
usage: netbe COMMAND ...
  netbe wire SPEC_A SPEC_B [--stats N] [--no-offload] [--policy FILE] [PERMISSIONS]
                                          join two backends until SIGINT/SIGTERM;
                                          offloads (checksum, TSO) are negotiated
                                          between them unless --no-offload;
                                          --policy judges each frame (B is the
                                          guest side); SIGHUP reloads FILE
  netbe check SPEC [PERMISSIONS] [--json] validate a backend config, print it normalized
  netbe slirp4netns [OPTION]... PID|PATH TAPNAME
                                          slirp4netns 1.2's command on netbe's slirp
                                          ('netbe slirp4netns --help' lists its options)
  netbe plan|apply|destroy|status|bhyve-args FILE [--os freebsd|linux] [--dry-run]
                                          host topology (see README)
SPEC is a bhyve-style backend config: BACKEND[,key[=value]]...
  e.g. tap0   stream,connect=unix:/run/vm.sock   slirp,hostfwd=tcp::2222-:22
PERMISSIONS: options that reach the host are refused unless given
  --allow-exec       slirp guestfwd=...-cmd: runs host commands
  --allow-files DIR  UNIX socket paths (stream, dgram, slirp hostfwd=unix:)
                     and slirp tftp= inside DIR ("/": anywhere)
]==]

-- The permission options of wire and check, added to the option table T.
local function with_permissions(t)
  t["allow-exec"], t["allow-files"] = false, true
  return t
end

-- The netbe.open/netbe.check permissions table for the options in OPT.
local function permissions(opt)
  return { allow_exec = opt["allow-exec"] == true, allow_files = opt["allow-files"] }
end

local COUNTERS = { "rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
                   "rx_drops", "tx_drops", "rx_errors", "tx_errors",
                   "rx_bad_hdr", "tx_bad_hdr", "rx_sw_frames", "tx_sw_frames" }
-- Shown once a backend has reassembled fragments (slirp).
local FRAG_COUNTERS = { "tx_frags", "tx_frag_whole", "tx_frag_drops", "tx_frag_overlap",
                        "tx_frag_oversize", "tx_frag_timeout", "tx_frag_evicted" }

-- Feature bits by name, in the order `netbe wire` prints them.
local FEATURES = { "CSUM", "GUEST_CSUM", "HOST_TSO4", "HOST_TSO6", "HOST_ECN", "HOST_UFO",
                   "HOST_USO", "GUEST_TSO4", "GUEST_TSO6", "GUEST_ECN", "GUEST_UFO",
                   "GUEST_USO4", "GUEST_USO6" }

-- "csum guest_csum host_tso4 ..." for a feature mask, or "off".
function cli.format_features(bits)
  local netbe = require("netbe")
  local names = {}
  for _, n in ipairs(FEATURES) do
    if bits & netbe["F_" .. n] ~= 0 then names[#names + 1] = n:lower() end
  end
  return #names > 0 and table.concat(names, " ") or "off"
end

-- One line of counters for a backend.
function cli.format_stats(be)
  local s = be:stats()
  local parts = {}
  for _, k in ipairs(COUNTERS) do parts[#parts + 1] = k .. "=" .. s[k] end
  if s.tx_frags > 0 then
    for _, k in ipairs(FRAG_COUNTERS) do parts[#parts + 1] = k .. "=" .. s[k] end
  end
  return string.format("%-12s %s", be:name(), table.concat(parts, " "))
end

function cli.wire(args)
  local pos, opt = cmdline.options(args, with_permissions{ stats = true, ["no-offload"] = false,
                                                          policy = true })
  if not pos then return fail(2, "wire: %s", opt) end
  if #pos ~= 2 then return fail(2, "wire: expected two backend specs, got %d", #pos) end
  local every = opt.stats and tonumber(opt.stats)
  if opt.stats and (not every or every <= 0) then
    return fail(2, "wire: --stats wants a positive number of seconds, got '%s'", opt.stats)
  end
  local netbe = require("netbe")
  local perm = permissions(opt)
  local ok, a = pcall(netbe.open, pos[1], perm)
  if not ok then return fail(1, "wire: %s", a) end
  local b
  ok, b = pcall(netbe.open, pos[2], perm)
  if not ok then a:close(); return fail(1, "wire: %s", b) end
  return cli.run_wire(a, b, { offload = not opt["no-offload"], policy = opt.policy,
                              every = every })
end

-- Joins the open backends A and B (B faces the guest) and runs the wire
-- until SIGINT or SIGTERM, a side going down, or OPT.tick returning a
-- reason; closes all and returns the exit status. OPT: offload (a
-- boolean), policy (a file, SIGHUP reloads it), rules (a policy table,
-- for wires a command builds), every (seconds between counters),
-- control (a control socket path: not in this build yet), ready (called
-- once the wire runs), tick (called every step; a string ends the wire,
-- "done" with status 0).
function cli.run_wire(a, b, opt)
  local netbe = require("netbe")
  local every = opt.every
  local function close_all(w) if w then w:close() end; a:close(); b:close() end
  if opt.control then
    close_all()
    return fail(1, "wire: the control socket (--control) is not in this netbe yet")
  end
  local w = netbe.wire(a, b, { offload = opt.offload })
  local policy = (opt.policy or opt.rules) and require("netbe.policy")
  if opt.policy then
    local n, e = policy.apply(w, opt.policy)
    if not n then close_all(w); return fail(1, "wire: %s", e) end
    print(string.format("wire: policy %s, %d rules (SIGHUP reloads it)", opt.policy, n))
  elseif opt.rules then
    local p, e = policy.compile(opt.rules)
    if not p then close_all(w); return fail(1, "wire: %s", e) end
    w:set_policy(p)
  end
  print(string.format("wire: %s (%s) <-> %s (%s), until SIGINT or SIGTERM",
                      a:name(), a:type(), b:name(), b:type()))
  print(string.format("wire: offloads %s: %s", a:name(), cli.format_features(a:features())))
  print(string.format("wire: offloads %s: %s", b:name(), cli.format_features(b:features())))
  io.stdout:flush()
  local function report()
    print(cli.format_stats(a)); print(cli.format_stats(b))
    local st = w:policy_stats()
    if st then print(policy.format_stats(st)) end
    io.stdout:flush()
  end
  -- SIGHUP: reload the policy; a file that fails keeps the rules in force.
  local function on_signal()
    if not opt.policy then return end
    local n, e = policy.apply(w, opt.policy)
    if n then
      print(string.format("wire: policy %s reloaded, %d rules", opt.policy, n))
      io.stdout:flush()
    else
      fail(1, "wire: policy reload failed, keeping the rules in force: %s", e)
    end
  end
  -- Every step (a second; a tenth with OPT.tick): stop if a side went
  -- down or OPT.tick says so; print counters when due.
  local elapsed, step = 0, math.min(every or 1, opt.tick and 0.1 or 1)
  local function tick()
    for _, be in ipairs({ a, b }) do
      local why = be:down()
      if why then return be:name() .. " went down: " .. why end
    end
    if opt.tick then
      local why = opt.tick()
      if why then return why end
    end
    elapsed = elapsed + step
    if every and elapsed + 1e-9 >= every then elapsed = 0; report() end
  end
  if opt.ready then opt.ready() end
  local reason = netbe.run{ signals = true, every = step, tick = tick, on_signal = on_signal }
  local stopped = reason:match("^SIG") or reason == "done"
  print("wire: stopped by " .. reason)
  report()
  print(string.format("wire: %d frames dropped by the wire", w:drops()))
  close_all(w)
  if not stopped then return fail(1, "wire: %s", reason) end
  return 0
end

function cli.check(args)
  local pos, opt = cmdline.options(args, with_permissions{ json = false })
  if not pos then return fail(2, "check: %s", opt) end
  if #pos ~= 1 then return fail(2, "check: expected one backend spec, got %d", #pos) end
  local netbe = require("netbe")
  local ok, cfg, keys, needs = pcall(netbe.check, pos[1], permissions(opt))
  if not ok then return cmdline.fail_json(opt.json, 1, "check: %s", cfg) end
  if not cfg then return cmdline.fail_json(opt.json, 1, "check: %s", keys) end
  if opt.json then
    local config = cmdline.object()
    for _, k in ipairs(keys) do config[k] = cfg[k] end
    cmdline.print_json({ ok = true, type = cfg.type, keys = cmdline.array(keys), config = config,
                         permissions = cmdline.array(needs) })
    return 0
  end
  for _, k in ipairs(keys) do print(k .. "=" .. cfg[k]) end
  print(string.format("check: ok, %s backend, %d keys%s", cfg.type, #keys,
                      #needs > 0 and ", uses permissions: " .. table.concat(needs, ", ") or ""))
  return 0
end

local TOPOLOGY = { plan = true, apply = true, destroy = true, status = true,
                   ["bhyve-args"] = true }
local COMMANDS = "wire, check, plan, apply, destroy, status, bhyve-args or slirp4netns; "
  .. "'netbe help' shows the usage"

local function dispatch(argv)
  local cmd = argv[1]
  local rest = table.move(argv, 2, #argv, 1, {})
  if cmd == "wire" then return cli.wire(rest) end
  if cmd == "check" then return cli.check(rest) end
  if cmd == "slirp4netns" then return require("netbe.slirp4netns").main(rest) end
  if cmd and TOPOLOGY[cmd] then return require("netbe.topocli").main(cmd, rest) end
  if cmd == "-h" or cmd == "--help" or cmd == "help" then
    io.write(USAGE, require("netbe.topocli").USAGE)
    return 0
  end
  if not cmd then return fail(2, "no command given (expected %s)", COMMANDS) end
  return fail(2, "unknown command '%s' (expected %s)", cmd, COMMANDS)
end

-- Runs the command ARGV and returns its exit status. Whatever goes wrong
-- ends in one line on stderr, never a Lua traceback.
function cli.main(argv)
  local ok, status = pcall(dispatch, argv)
  if ok then return status end
  return fail(1, "%s", (tostring(status):match("^[^\n]*")))
end

return cli
