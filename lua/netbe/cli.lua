-- netbe.cli: the subcommands of the `netbe` command.
-- Each returns an exit status: 0 done, 1 failed, 2 bad usage.
local cli = {}

local USAGE = [==[
usage: netbe COMMAND ...
  netbe wire SPEC_A SPEC_B [--stats N]   join two backends until SIGINT/SIGTERM
  netbe check SPEC                        validate a backend config, print it normalized
  netbe plan|apply|destroy|status|bhyve-args FILE [--os freebsd|linux] [--dry-run]
                                          host topology (see README)
SPEC is a bhyve-style backend config: BACKEND[,key[=value]]...
  e.g. tap0   stream,connect=unix:/run/vm.sock   slirp,hostfwd=tcp::2222-:22
]==]

local function fail(status, fmt, ...)
  io.stderr:write("netbe: ", string.format(fmt, ...), "\n")
  return status
end

-- Splits "--name value" options from positional arguments.
local function options(args, known)
  local pos, opt = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name = a:match("^%-%-([%w-]+)$")
    if name then
      if known[name] == nil then return nil, "unknown option --" .. name end
      if known[name] then
        i = i + 1
        if args[i] == nil then return nil, "--" .. name .. " needs a value" end
        opt[name] = args[i]
      else
        opt[name] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return pos, opt
end

local COUNTERS = { "rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
                   "rx_drops", "tx_drops", "rx_errors", "tx_errors" }

-- One line of counters for a backend.
function cli.format_stats(be)
  local s = be:stats()
  local parts = {}
  for _, k in ipairs(COUNTERS) do parts[#parts + 1] = k .. "=" .. s[k] end
  return string.format("%-12s %s", be:name(), table.concat(parts, " "))
end

function cli.wire(args)
  local pos, opt = options(args, { stats = true })
  if not pos then return fail(2, "wire: %s", opt) end
  if #pos ~= 2 then return fail(2, "wire: expected two backend specs, got %d", #pos) end
  local every = opt.stats and tonumber(opt.stats)
  if opt.stats and (not every or every <= 0) then
    return fail(2, "wire: --stats wants a positive number of seconds, got '%s'", opt.stats)
  end
  local netbe = require("netbe")
  local ok, a = pcall(netbe.open, pos[1])
  if not ok then return fail(1, "wire: %s", a) end
  local b
  ok, b = pcall(netbe.open, pos[2])
  if not ok then a:close(); return fail(1, "wire: %s", b) end
  local w = netbe.wire(a, b)
  print(string.format("wire: %s (%s) <-> %s (%s), until SIGINT or SIGTERM",
                      a:name(), a:type(), b:name(), b:type()))
  io.stdout:flush()
  local function report()
    print(cli.format_stats(a)); print(cli.format_stats(b)); io.stdout:flush()
  end
  -- Every second: stop if a side went down; print counters when due.
  local elapsed, step = 0, math.min(every or 1, 1)
  local function tick()
    for _, be in ipairs({ a, b }) do
      local why = be:down()
      if why then return be:name() .. " went down: " .. why end
    end
    elapsed = elapsed + step
    if every and elapsed + 1e-9 >= every then elapsed = 0; report() end
  end
  local reason = netbe.run{ signals = true, every = step, tick = tick }
  local stopped = reason:match("^SIG") or reason == "done"
  print("wire: stopped by " .. reason)
  report()
  print(string.format("wire: %d frames dropped by the wire", w:drops()))
  w:close(); a:close(); b:close()
  if not stopped then return fail(1, "wire: %s", reason) end
  return 0
end

function cli.check(args)
  if #args ~= 1 then return fail(2, "check: expected one backend spec, got %d", #args) end
  local netbe = require("netbe")
  local ok, cfg, keys = pcall(netbe.check, args[1])
  if not ok then return fail(1, "check: %s", cfg) end
  if not cfg then return fail(1, "check: %s", keys) end
  for _, k in ipairs(keys) do print(k .. "=" .. cfg[k]) end
  print(string.format("check: ok, %s backend, %d keys", cfg.type, #keys))
  return 0
end

local TOPOLOGY = { plan = true, apply = true, destroy = true, status = true,
                   ["bhyve-args"] = true }

function cli.main(argv)
  local cmd = argv[1]
  local rest = table.move(argv, 2, #argv, 1, {})
  if cmd == "wire" then return cli.wire(rest) end
  if cmd == "check" then return cli.check(rest) end
  if cmd and TOPOLOGY[cmd] then return require("netbe.topocli").main(cmd, rest) end
  if cmd == "-h" or cmd == "--help" or cmd == "help" then io.write(USAGE); return 0 end
  io.stderr:write(cmd and ("netbe: unknown command '" .. cmd .. "'\n") or "", USAGE)
  return 2
end

return cli
