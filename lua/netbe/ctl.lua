-- netbe.ctl: `netbe ctl PATH COMMAND [ARGS] [--nic NIC] [--json]`, the
-- shell's client of a control socket (netbe.control). It prints the
-- answer as text, or as the server's JSON with --json; an error answer
-- goes to stderr with exit status 1.
local cmdline = require("netbe.cmdline")
local control = require("netbe.control")

local ctl = {}
local fail = cmdline.fail

ctl.USAGE = [==[
usage: netbe ctl PATH COMMAND [ARGS] [--nic NIC] [--json]
  version                        netbe's version
  stats                          every counter: both sides, the wire, the policy
  metrics                        the counters in Prometheus's text format
  features                       offloads offered and negotiated on each side
  link [up|down]                 show the link, or plug or pull the cable
  hostfwd_add RULE               a slirp forward, e.g. tcp::8080-:80; prints its id
  hostfwd_list                   the forwards: id and rule
  hostfwd_remove ID|RULE         remove a forward by id or by its host side
  policy_load [FILE]             load FILE (inside --allow-files), or reload
  policy_stats                   the policy's counters
  nic_add NAME SPEC_A SPEC_B [--policy FILE]   (netbe serve) add a NIC
  nic_remove NAME                (netbe serve) remove a NIC
--nic names the NIC (needed when the process runs more than one).
]==]

-- Each command: its positional arguments (a list of names, "?" marks an
-- optional one) and how its answer reads as text.
local function lines(list) return table.concat(list, "\n") end

local function show_stats(r)
  local cli = require("netbe.cli")
  local out = {}
  for _, st in ipairs(r.nics) do out[#out + 1] = cli.format_nic(st, true) end
  return lines(out)
end

local function show_features(r)
  local function side(s)
    return string.format("%-12s offered: %s; negotiated: %s (header %d)", s.name,
                         #s.offered > 0 and table.concat(s.offered, " ") or "none",
                         #s.negotiated > 0 and table.concat(s.negotiated, " ") or "off", s.hdr_len)
  end
  return lines({ side(r.a), side(r.b) })
end

local COMMANDS = {
  version = { {}, function(r) return "netbe " .. r.version end },
  stats = { {}, show_stats },
  metrics = { {}, function(r) return (r.text:gsub("\n$", "")) end },
  features = { {}, show_features },
  link = { { "state?" }, function(r)
    return string.format("%s: link %s (dropped while down: to_guest=%d from_guest=%d)", r.nic,
                         r.link, r.link_drops_to_guest, r.link_drops_from_guest)
  end },
  hostfwd_add = { { "rule" }, function(r) return "id " .. r.id end },
  hostfwd_list = { {}, function(r)
    local out = {}
    for _, e in ipairs(r.entries) do out[#out + 1] = string.format("%d %s", e.id, e.rule) end
    return lines(out)
  end },
  hostfwd_remove = { { "which" }, function() return nil end },
  policy_load = { { "path?" }, function(r)
    return string.format("%s: policy %s, %d rules", r.nic, r.path, r.rules)
  end },
  policy_stats = { {}, function(r) return require("netbe.policy").format_stats(r) end },
  nic_add = { { "name", "a", "b" }, function(r) return "added " .. r.nic end },
  nic_remove = { { "name" }, function() return nil end },
}

local function usage_error(fmt, ...)
  return fail(2, "ctl: " .. fmt .. " ('netbe ctl help' lists the commands)", ...)
end

function ctl.main(args)
  if args[1] == "help" or args[1] == "--help" or args[2] == "help" then
    io.write(ctl.USAGE)
    return 0
  end
  local pos, opt = cmdline.options(args, { json = false, nic = true, policy = true })
  if not pos then return usage_error("%s", opt) end
  if #pos < 2 then return usage_error("expected a socket path and a command") end
  local path, cmd = pos[1], pos[2]
  local spec = COMMANDS[cmd]
  if not spec then return usage_error("unknown command '%s'", cmd) end
  local names, req = spec[1], { nic = opt.nic }
  local given = #pos - 2
  local most, least = #names, 0
  for _, n in ipairs(names) do if not n:find("?", 1, true) then least = least + 1 end end
  if given < least or given > most then
    return usage_error("%s: expected %d to %d arguments, got %d", cmd, least, most, given)
  end
  for i, n in ipairs(names) do req[n:gsub("%?$", "")] = pos[2 + i] end
  if cmd == "hostfwd_remove" then
    local id = math.tointeger(tonumber(req.which))
    if id then req.id = id else req.rule = req.which end
    req.which = nil
  end
  if opt.policy then
    if cmd ~= "nic_add" then return usage_error("--policy is for nic_add") end
    req.policy = opt.policy
  end
  if cmd == "nic_add" or cmd == "nic_remove" then req.name, req.nic = req.name, nil end
  local ans, text = control.call(path, cmd, req)
  if not ans then return fail(1, "ctl: %s", text) end
  if opt.json then io.write((text:gsub("\n*$", "\n"))) end
  if ans.error then
    local desc = type(ans.error) == "table" and ans.error.desc or tostring(ans.error)
    return fail(1, "ctl: %s", tostring(desc))
  end
  if not opt.json then
    local out = spec[2](ans["return"])
    if out and out ~= "" then print(out) end
  end
  return 0
end

return ctl
