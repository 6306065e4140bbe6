-- netbe.topocli: `netbe plan|apply|destroy|status|bhyve-args FILE [options]`.
-- main(cmd, args) returns an exit status: 0 done (status: host matches the
-- topology), 1 failed (status: drift or missing steps), 2 bad usage.
local topology = require("netbe.topology")
local plan = require("netbe.plan")
local state = require("netbe.state")
local bhyve = require("netbe.bhyve")
local cmdline = require("netbe.cmdline")

local topocli = {}

topocli.USAGE = [==[
usage: netbe plan|apply|destroy|status|bhyve-args FILE [--os freebsd|linux] [--dry-run]
                                                       [--netns NAME] [--vm NAME [--netbe]]
  plan        print every step: the argv it runs, its probe and its inverse
  apply       make what is missing (idempotent); undo this run's steps if one fails
  destroy     undo what netbe made for this topology (recorded in its state)
  status      compare the topology with the host; exit 1 on drift or missing steps
  bhyve-args  each VM NIC as a bhyve -s argument and a netbe config string
  --os        the renderer (default: this host's system)
  --dry-run   apply/destroy: probe only and print what would run
  --netns     Linux: run every command inside network namespace NAME
  --vm        bhyve-args: print only this VM's arguments, on one line
  --netbe     bhyve-args --vm: print its NICs' netbe config strings, one a line
  --json      plan, status, bhyve-args: print one JSON object (see README)
  state: $NETBE_STATE_DIR (default /var/lib/netbe)
]==]

local SEE_USAGE = "'netbe help' shows the usage"

local OPTIONS = { os = true, ["dry-run"] = false, netns = true, vm = true, netbe = false,
                  json = false }

local fail = cmdline.fail

local function json_null() return require("dkjson").null end

local function host_os()
  local p = io.popen("uname -s 2>/dev/null")
  local s = p and p:read("l") or ""
  if p then p:close() end
  return s == "FreeBSD" and "freebsd" or "linux"
end

local function renderer(os_name)
  if os_name == "freebsd" then return require("netbe.render_freebsd") end
  if os_name == "linux" then return require("netbe.render_linux") end
end

-- The plan of TOPO for OS_NAME, or nil and an error.
function topocli.steps(topo, os_name)
  return renderer(os_name).render(topo, state.files(topo.name))
end

-- bhyve-args --json: {"topology", "vms": [{"name", "nics": [{"index",
-- "type", "switch", "bhyve", "bhyve_error", "netbe"}]}]}; absent
-- values are null.
local function bhyve_json(topo, vms)
  local out = cmdline.array()
  for _, vm in ipairs(vms) do
    local nics = cmdline.array()
    for _, nic in ipairs(vm.nics) do
      local arg, why = bhyve.arg(nic)
      nics[#nics + 1] = { index = nic.index, type = nic.type,
                          switch = nic.switch and nic.switch.name or json_null(),
                          bhyve = arg or json_null(), bhyve_error = why or json_null(),
                          netbe = bhyve.netbe(nic) or json_null() }
    end
    out[#out + 1] = { name = vm.name, nics = nics }
  end
  cmdline.print_json({ ok = true, topology = topo.name, vms = out })
  return 0
end

local function bhyve_args(topo, opt)
  if opt.vm then
    local vm = topo.vms[opt.vm]
    if not vm then
      return cmdline.fail_json(opt.json, 1, "bhyve-args: no VM named '%s' in topology %s",
                               opt.vm, topo.name)
    end
    if opt.json then return bhyve_json(topo, { vm }) end
    local parts = {}
    for _, nic in ipairs(vm.nics) do
      parts[#parts + 1] = opt.netbe and bhyve.netbe(nic) or bhyve.arg(nic)
    end
    print(table.concat(parts, opt.netbe and "\n" or " "))
    return 0
  end
  if opt.json then return bhyve_json(topo, topo.vm_list) end
  for _, vm in ipairs(topo.vm_list) do
    print(vm.name .. ":")
    for _, nic in ipairs(vm.nics) do
      local where = nic.switch and (" on " .. nic.switch.name) or ""
      local arg, why = bhyve.arg(nic)
      print(string.format("  nic%d (%s%s)", nic.index, nic.type, where))
      print("    bhyve: " .. (arg or ("none: " .. why)))
      print("    netbe: " .. (bhyve.netbe(nic) or "none: not a VM backend"))
    end
  end
  return 0
end

-- plan --json: {"topology", "os", "steps": [{"id", "what", "requires",
-- "run", "write", "probe", "undo"}]}: commands as argv lists; a probe is {"argv",
-- and "shows", "matches" or "not_matches"} or {"file", "content"}.
local function plan_json(topo, os_name, steps)
  local list = cmdline.array()
  for _, step in ipairs(steps) do
    local probes = cmdline.array()
    for _, c in ipairs(step.probe or {}) do
      probes[#probes + 1] = c.file and { file = c.file, content = c.content }
        or { argv = c.argv, shows = c.plain, matches = c.match, not_matches = c.nomatch }
    end
    list[#list + 1] = { id = step.id, what = step.what, requires = step.refuse or json_null(),
                        run = cmdline.array(table.move(step.run or {}, 1, #(step.run or {}), 1, {})),
                        write = step.write and { path = step.write.path,
                                                 content = step.write.content } or json_null(),
                        probe = probes,
                        undo = cmdline.array(table.move(step.inverse or {}, 1, #(step.inverse or {}), 1, {})) }
  end
  cmdline.print_json({ ok = true, topology = topo.name, os = os_name, steps = list })
  return 0
end

local function context(st, opt)
  local prefix = opt.netns and { "ip", "netns", "exec", opt.netns } or nil
  return {
    run = plan.runner(prefix),
    log = function(line) print(line); io.stdout:flush() end,
    dry = opt["dry-run"] == true,
    made = st.made,
    save = function() state.save(st) end,
    user = st.name,
    scope = opt.netns,
    host = state.host,
  }
end

local function do_status(steps, ctx, topo, opt)
  local rows, all_ok = plan.status(steps, ctx)
  local counts = { ok = 0, missing = 0, drift = 0, stale = 0 }
  local notes = { drift = "made by netbe, changed or removed since",
                  stale = "made by netbe, no longer in the topology; apply undoes it" }
  local list = cmdline.array()
  for _, r in ipairs(rows) do
    counts[r.state] = counts[r.state] + 1
    local note = notes[r.state]
    if r.step.refuse and r.state ~= "ok" then note = r.step.refuse:match("^[^\n]*") end
    list[#list + 1] = { state = r.state, id = r.step.id, what = r.step.what, note = note or json_null() }
    if not opt.json then
      print(string.format("%-8s %s%s", r.state, r.step.what, note and ("   (" .. note .. ")") or ""))
    end
  end
  if opt.json then
    cmdline.print_json({ ok = all_ok, topology = topo.name, counts = counts, steps = list })
    return all_ok and 0 or 1
  end
  print(string.format("status: %d ok, %d missing, %d drifted%s", counts.ok, counts.missing, counts.drift,
                      counts.stale > 0 and string.format(", %d stale", counts.stale) or ""))
  return all_ok and 0 or 1
end

-- apply or destroy, under the topology's lock.
local function change(cmd, topo, steps, os_name, opt)
  local st, serr = state.load(topo.name)
  if not st then return fail(1, "%s", serr) end
  st.os = st.os or os_name
  local ctx = context(st, opt)
  if cmd == "apply" then
    local ok, msg = plan.apply(steps, ctx)
    if not ok then return fail(1, "apply %s: %s", topo.name, msg) end
    print("apply " .. topo.name .. ": " .. msg)
    return 0
  end
  -- destroy
  if #st.made == 0 then
    if not ctx.dry then state.remove(topo.name) end
    print("destroy " .. topo.name .. ": nothing recorded, nothing to undo")
    return 0
  end
  local ok, msg = plan.destroy(ctx)
  if ok and not ctx.dry then state.remove(topo.name) end
  if not ok then return fail(1, "destroy %s: %s", topo.name, msg) end
  print("destroy " .. topo.name .. ": " .. msg)
  return 0
end

function topocli.main(cmd, args)
  local pos, opt = cmdline.options(args, OPTIONS)
  if not pos then return fail(2, "%s: %s (%s)", cmd, opt, SEE_USAGE) end
  if #pos ~= 1 then return fail(2, "%s: expected one topology file, got %d (%s)", cmd, #pos, SEE_USAGE) end
  local os_name = opt.os or host_os()
  if not renderer(os_name) then
    return fail(2, "%s: --os wants freebsd or linux, got '%s'", cmd, os_name)
  end
  if opt.netns and os_name ~= "linux" then return fail(2, "%s: --netns is for --os linux", cmd) end
  local topo, err = topology.load(pos[1])
  if opt.json and (cmd == "apply" or cmd == "destroy") then
    return fail(2, "%s: --json is for plan, status and bhyve-args", cmd)
  end
  if not topo then return cmdline.fail_json(opt.json, 1, "%s", err) end
  if cmd == "bhyve-args" then return bhyve_args(topo, opt) end
  local steps, rerr = topocli.steps(topo, os_name)
  if not steps then return cmdline.fail_json(opt.json, 1, "%s: %s: %s", cmd, pos[1], rerr) end
  if cmd == "plan" and opt.json then
    return plan_json(topo, os_name, steps)
  end
  if cmd == "plan" then
    io.write(string.format("# plan for topology %s on %s: %d steps\n", topo.name, os_name, #steps))
    io.write(plan.format(steps))
    return 0
  end
  local here = host_os()
  if os_name ~= here then
    return fail(2, "%s: --os %s on a %s host: only plan and bhyve-args work for another system",
                cmd, os_name, here)
  end
  if opt.netns then
    local ok, out = plan.runner({ "ip", "netns", "exec", opt.netns })({ "true" })
    if not ok then
      return cmdline.fail_json(opt.json, 1, "%s: --netns %s: %s", cmd, opt.netns,
                               (out:gsub("%s+$", "")))
    end
  end
  if cmd == "status" then
    local st, serr = state.load(topo.name)
    if not st then return cmdline.fail_json(opt.json, 1, "%s", serr) end
    return do_status(steps, context(st, opt), topo, opt)
  end
  local unlock, lerr = state.lock(topo.name)
  if not unlock then return fail(1, "%s: %s", cmd, lerr) end
  local ok, status = pcall(change, cmd, topo, steps, os_name, opt)
  unlock()
  if not ok then return fail(1, "%s: %s", cmd, tostring(status)) end
  return status
end

return topocli
