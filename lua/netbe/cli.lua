-- netbe.cli: the subcommands of the `netbe` command.
-- Each returns an exit status: 0 done, 1 failed, 2 bad usage.
local cmdline = require("netbe.cmdline")

local cli = {}
local fail = cmdline.fail

local USAGE = [==[
usage: netbe COMMAND ...
  netbe wire SPEC_A SPEC_B [--stats N] [--json] [--no-offload] [--policy FILE]
             [--control unix:PATH [--control-mode MODE]] [--name NIC] [PERMISSIONS]
                                          join two backends until SIGINT/SIGTERM;
                                          offloads (checksum, TSO) are negotiated
                                          between them unless --no-offload;
                                          --policy judges each frame (B is the
                                          guest side); SIGHUP reloads FILE;
                                          --json: stats as JSON lines
  netbe serve [FILE] [--sockets DIR] [--stats N] [--json]
              [--control unix:PATH [--control-mode MODE]] [PERMISSIONS]
                                          many wires in one process: the userspace
                                          NICs of topology FILE (VM ends: stream
                                          sockets in DIR), more through nic_add
  netbe ctl PATH COMMAND [ARGS] [--nic NIC] [--json]
                                          ask the control socket at PATH ('netbe
                                          ctl help' lists the commands)
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
  --allow-files DIR  UNIX socket paths (stream, dgram, slirp hostfwd=unix:),
                     slirp tftp= and policy files sent to a control socket
                     inside DIR ("/": anywhere)
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

-- Shown always, and the fragment counters once a backend has reassembled
-- fragments (slirp).
local COUNTERS = { "rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
                   "rx_drops", "tx_drops", "rx_errors", "tx_errors",
                   "rx_bad_hdr", "tx_bad_hdr", "rx_sw_frames", "tx_sw_frames" }
local FRAG_COUNTERS = { "tx_frags", "tx_frag_whole", "tx_frag_drops", "tx_frag_overlap",
                        "tx_frag_oversize", "tx_frag_timeout", "tx_frag_evicted" }

-- "csum guest_csum host_tso4 ..." for a feature mask, or "off".
function cli.format_features(bits)
  local names = require("netbe.serve").feature_names(bits)
  return #names > 0 and table.concat(names, " ") or "off"
end

-- One line of counters for a side of a NIC's stats ({name =, counters =}).
function cli.format_stats(side)
  local s, parts = side.counters, {}
  for _, k in ipairs(COUNTERS) do parts[#parts + 1] = k .. "=" .. s[k] end
  if s.tx_frags > 0 then
    for _, k in ipairs(FRAG_COUNTERS) do parts[#parts + 1] = k .. "=" .. s[k] end
  end
  return string.format("%-12s %s", side.name, table.concat(parts, " "))
end

-- The text lines for the stats of one NIC (serve.stats).
function cli.format_nic(st, with_header)
  local lines = {}
  if with_header then
    lines[1] = string.format("nic %s: %s, link %s%s", st.name, st.state, st.link,
                             st.down and " (" .. st.down .. ")" or "")
  end
  for _, side in ipairs({ st.a, st.b }) do lines[#lines + 1] = cli.format_stats(side) end
  if st.wire and st.link == "down" or st.wire and st.wire.link_drops_to_guest
     + st.wire.link_drops_from_guest > 0 then
    lines[#lines + 1] = string.format("link %s: dropped to_guest=%d from_guest=%d", st.link,
                                      st.wire.link_drops_to_guest, st.wire.link_drops_from_guest)
  end
  if st.policy then lines[#lines + 1] = require("netbe.policy").format_stats(st.policy) end
  return table.concat(lines, "\n")
end

-- The options of the long-running commands (wire, serve).
local function with_running(t)
  t.stats, t.json, t.control, t["control-mode"] = true, false, true, true
  return with_permissions(t)
end

-- Check the --stats and --control options of CMD -> every, listen(set),
-- or nil, nil and the exit status of the usage error.
local function running_options(cmd, opt)
  local every = opt.stats and tonumber(opt.stats)
  if opt.stats and (not every or every <= 0) then
    return nil, nil, fail(2, "%s: --stats wants a positive number of seconds, got '%s'", cmd, opt.stats)
  end
  local control = require("netbe.control")
  local path, mode, e
  if opt.control then
    path, e = control.address(opt.control)
    if not path then return nil, nil, fail(2, "%s: %s", cmd, e) end
  end
  if opt["control-mode"] then
    if not path then return nil, nil, fail(2, "%s: --control-mode needs --control", cmd) end
    mode, e = control.mode(opt["control-mode"])
    if not mode then return nil, nil, fail(2, "%s: %s", cmd, e) end
  end
  local function listen(set)
    if not path then return true end
    return control.listen(set, path, mode)
  end
  return every or false, listen
end

-- Run SET until a signal (or, for wire, a side going down): print its
-- stats every EVERY seconds and when it stops, as text or with --json
-- as one JSON line each; SIGHUP reloads each NIC's policy file.
local function run_set(cmd, set, opt, every, stop_on_down)
  local json = opt.json and require("dkjson")
  local say = function(line)
    (json and io.stderr or io.stdout):write(cmd, ": ", line, "\n")
    io.stdout:flush()
  end
  local function report(stopped)
    if json then
      print(json.encode({ nics = set:all_stats(), stopped = stopped }))
    else
      for _, st in ipairs(set:all_stats()) do print(cli.format_nic(st, #set.order > 1)) end
    end
    io.stdout:flush()
  end
  local function on_hup()
    for _, name in ipairs(set.order) do
      local nic = set.nics[name]
      if nic.policy_path and not nic.down then
        local n, e = set:policy_load(nic)
        if n then say(string.format("policy %s reloaded, %d rules", nic.policy_path, n))
        else fail(1, "%s: policy reload failed, keeping the rules in force: %s", cmd, e) end
      end
    end
  end
  local reason = set:run{ every = every or nil, report = report, on_hup = on_hup,
                          on_down = function(name, why)
                            if stop_on_down then return why end
                            fail(1, "%s: NIC %s: %s", cmd, name, why)
                          end }
  local stopped = reason:match("^SIG") or reason == "done"
  say("stopped by " .. reason)
  report(reason)
  return stopped, reason
end

function cli.wire(args)
  local pos, opt = cmdline.options(args, with_running{ ["no-offload"] = false, policy = true,
                                                      name = true })
  if not pos then return fail(2, "wire: %s", opt) end
  if #pos ~= 2 then return fail(2, "wire: expected two backend specs, got %d", #pos) end
  local every, listen, status = running_options("wire", opt)
  if every == nil then return status end
  local set = require("netbe.serve").new(permissions(opt))
  local nic, e = set:add(opt.name or "wire", pos[1], pos[2],
                         { offload = not opt["no-offload"], policy = opt.policy })
  if not nic then return fail(1, "wire: %s", e) end
  local listener, lerr = listen(set)
  if not listener then set:close(); return fail(1, "wire: %s", lerr) end
  local out = opt.json and io.stderr or io.stdout
  local function say(fmt, ...) out:write("wire: ", string.format(fmt, ...), "\n") end
  if opt.policy then
    say("policy %s, %d rules (SIGHUP reloads it)", opt.policy, nic.policy_rules)
  end
  local a, b = nic.a, nic.b
  say("%s (%s) <-> %s (%s), until SIGINT or SIGTERM", a:name(), a:type(), b:name(), b:type())
  say("offloads %s: %s", a:name(), cli.format_features(a:features()))
  say("offloads %s: %s", b:name(), cli.format_features(b:features()))
  if opt.control then say("control socket %s", opt.control) end
  out:flush()
  local stopped, reason = run_set("wire", set, opt, every, true)
  local st = require("netbe.serve").stats(nic)
  if not opt.json then say("%d frames dropped by the wire", st.wire and st.wire.drops or 0) end
  if listener ~= true then listener:close() end
  set:close()
  if not stopped then return fail(1, "wire: %s", reason) end
  return 0
end

-- The VM end of each userspace NIC serve starts from a topology: a stream
-- socket in DIR the VM's process connects to.
local function vm_end(dir, vm, nic)
  return string.format("stream,listen=unix:%s/%s-nic%d.sock", dir, vm.name, nic.index)
end

-- Start the userspace NICs of topology FILE in SET; a NIC that fails is
-- kept down with why. Returns true, or nil and why the file failed.
local function serve_topology(set, file, dir)
  local topo, err = require("netbe.topology").load(file)
  if not topo then return nil, err end
  local nictypes = require("netbe.nictypes")
  for _, vm in ipairs(topo.vm_list) do
    for _, nic in ipairs(vm.nics) do
      local name = string.format("%s.nic%d", vm.name, nic.index)
      local a = dir and nictypes.wire(nic, "")
      local b = a and vm_end(dir, vm, nic)
      if nictypes.wire(nic, "") and not dir then
        return nil, "topology " .. topo.name .. " has userspace NICs: give --sockets DIR"
      end
      if a then
        local ok, e = set:add(name, a, b, { perm_b = { allow_files = dir } })
        if ok then
          print(string.format("serve: %s: %s <-> %s", name, a, b))
        else
          set:add_failed(name, e)
          fail(1, "serve: %s: %s", name, e)
        end
      end
    end
  end
  return true
end

function cli.serve(args)
  local pos, opt = cmdline.options(args, with_running{ sockets = true })
  if not pos then return fail(2, "serve: %s", opt) end
  if #pos > 1 then return fail(2, "serve: expected at most one topology file, got %d", #pos) end
  local every, listen, status = running_options("serve", opt)
  if every == nil then return status end
  local set = require("netbe.serve").new(permissions(opt))
  set.may_add = true
  if pos[1] then
    local ok, e = serve_topology(set, pos[1], opt.sockets)
    if not ok then set:close(); return fail(1, "serve: %s", e) end
  end
  local listener, lerr = listen(set)
  if not listener then set:close(); return fail(1, "serve: %s", lerr) end
  local out = opt.json and io.stderr or io.stdout
  out:write(string.format("serve: %d NICs%s, until SIGINT or SIGTERM\n", #set.order,
                          opt.control and ", control socket " .. opt.control or ""))
  out:flush()
  local stopped, reason = run_set("serve", set, opt, every, false)
  if listener ~= true then listener:close() end
  set:close()
  if not stopped then return fail(1, "serve: %s", reason) end
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
local COMMANDS = "wire, serve, ctl, check, plan, apply, destroy, status, bhyve-args or "
  .. "slirp4netns; 'netbe help' shows the usage"

local function dispatch(argv)
  local cmd = argv[1]
  local rest = table.move(argv, 2, #argv, 1, {})
  if cmd == "wire" then return cli.wire(rest) end
  if cmd == "check" then return cli.check(rest) end
  if cmd == "serve" then return cli.serve(rest) end
  if cmd == "ctl" then return require("netbe.ctl").main(rest) end
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
