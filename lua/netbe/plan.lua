-- netbe.plan: steps, and the engine that applies, undoes and checks them.
--
-- A step is a table:
--   id       unique within a plan ("bridge:brext"); the state records it
--   what     one line for people ("create bridge brext")
--   run      list of argv lists, run in order; the step fails at the first
--            one that exits non-zero (unless its output matches `ok_output`)
--   write    { path = P, content = C }: write a file instead of running
--   rename   { to = NAME, argv = { argv... }, cleanup = argv }: the first
--            command prints the name the kernel chose; when it is not NAME,
--            run these with "%s" replaced by that name (FreeBSD cloners; see
--            substitute); if one fails, cleanup removes what was made
--   probe    list of checks { argv = {...}, match = PATTERN, plain = TEXT,
--            nomatch = PATTERN }; the step is in place when every check
--            exits 0 and its output fits. A step without probe always runs.
--   inverse  list of argv lists that undo the step (may be empty)
--   refuse   for a check step (no run): the message when its probe fails
--   ok_output pattern: a failing command whose output matches succeeded
--   follows  id of an earlier step (a config file): when apply made that
--            step, this one runs again even though its probe passes
--   stop     list of argv lists: when a step runs again, stop it first
--            (a daemon), then wait for its probe to fail
--   script   text that format shows beside the commands (an ngctl script)
--   owns     the step creates interface IFNAME and marks it as netbe's:
--            { ifname, marker = TEXT, show = argv printing the interface,
--              marker_pattern = capture of the marker in that output,
--              index_pattern = capture of its ifindex, where the OS shows one }.
--            Undo removes the interface only while it carries the marker
--            (a same-named interface made by someone else is left alone);
--            a changed ifindex with the marker is netbe's interface made
--            again, after a reboot say.
--   touches  names of interfaces the step changes (an address on a
--            bridge): when one of them is not netbe's, undo leaves it alone
--   shared   a host setting several topologies may need: { name, value,
--            get = argv printing it, set = argv prefix taking "NAME=VALUE" }.
--            Apply records who needs it and the value before netbe first
--            changed it (ctx.host); undo restores that value only when no
--            topology needs it any more.
-- A context (ctx) carries run, log, dry, made and save (see plan.apply),
-- and for shared steps user (the topology's name), scope (the network
-- namespace the commands run in, or nil) and host (state.host).
-- The engine never builds a shell string from untrusted parts without
-- quoting every argument.
local plan = {}

local function shquote(s)
  s = tostring(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
plan.shquote = shquote

function plan.argv_text(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = shquote(a) end
  return table.concat(out, " ")
end

-- A runner runs one argv (stdin from /dev/null) and returns ok, output
-- (stdout and stderr). PREFIX (an argv list, e.g. { "ip", "netns", "exec",
-- "ns1" }) is put in front.
function plan.runner(prefix)
  return function(argv)
    local full = {}
    for _, a in ipairs(prefix or {}) do full[#full + 1] = a end
    for _, a in ipairs(argv) do full[#full + 1] = a end
    local p = io.popen(plan.argv_text(full) .. " </dev/null 2>&1", "r")
    local out = p:read("a")
    return p:close() == true, out
  end
end

-- True when every check of the step's probe passes. CACHE (optional)
-- keeps command outputs between probes; whoever changes the host must
-- empty it.
function plan.probe(step, run, cache)
  if not step.probe then return false end
  for _, c in ipairs(step.probe) do
    if c.file then
      local f = io.open(c.file, "r")
      local text = f and f:read("a")
      if f then f:close() end
      if text ~= c.content then return false end
    else
      local key = plan.argv_text(c.argv)
      local hit = cache and cache[key]
      if not hit then
        hit = table.pack(run(c.argv))
        if cache then cache[key] = hit end
      end
      local ok, out = hit[1], hit[2]
      if not ok then return false end
      if c.match and not out:match(c.match) then return false end
      if c.plain and not out:find(c.plain, 1, true) then return false end
      if c.nomatch and out:match(c.nomatch) then return false end
    end
  end
  return true
end

local function write_file(w)
  local dir = w.path:match("^(.*)/[^/]*$")
  if dir then os.execute("mkdir -p " .. shquote(dir)) end
  local f, err = io.open(w.path, "w")
  if not f then return false, err end
  f:write(w.content)
  f:close()
  return true, ""
end

-- A rename argv with "%s" made the created name and "%p" its peer (the
-- created name with its final 'a' made 'b': FreeBSD's epair halves).
function plan.substitute(tmpl, got)
  local out = {}
  for i, a in ipairs(tmpl) do
    if a == "%s" then out[i] = got
    elseif a == "%p" then out[i] = got:gsub("a$", "b")
    else out[i] = a end
  end
  return out
end

-- Runs the step's commands. Returns ok, or false, a message and whether
-- some of its commands had already succeeded (the step is half made).
function plan.execute(step, run, log)
  if step.write then
    log("write " .. step.write.path)
    return write_file(step.write)
  end
  for i, argv in ipairs(step.run or {}) do
    log(plan.argv_text(argv))
    local ok, out = run(argv)
    if not ok and step.ok_output and out:match(step.ok_output) then ok = true end
    if not ok then
      return false, string.format("'%s' failed: %s", plan.argv_text(argv), (out:gsub("%s+$", ""))), i > 1
    end
    if i == 1 and step.rename then
      local got = out:match("^%s*(%S+)%s*$")
      if not got then return false, "cannot read the created interface name from: " .. out end
      if got ~= step.rename.to then
        for _, tmpl in ipairs(step.rename.argv) do
          local argv2 = plan.substitute(tmpl, got)
          log(plan.argv_text(argv2))
          local ok2, out2 = run(argv2)
          if not ok2 then
            -- The step's inverse names the wanted interface, not this one.
            if step.rename.cleanup then
              local c = plan.substitute(step.rename.cleanup, got)
              log(plan.argv_text(c))
              run(c)
            end
            return false, string.format("'%s' failed: %s", plan.argv_text(argv2),
                                        (out2:gsub("%s+$", ""))), false
          end
        end
      end
    end
  end
  return true
end

-- Runs a list of inverse argv lists; returns the messages of those that failed.
function plan.undo(inverse, run, log)
  local errs = {}
  for _, argv in ipairs(inverse or {}) do
    log(plan.argv_text(argv))
    local ok, out = run(argv)
    if not ok then errs[#errs + 1] = plan.argv_text(argv) .. ": " .. out:gsub("%s+$", "") end
  end
  return errs
end

-- Logs each argv of ARGVS, indented, for a dry run.
local function log_argvs(ctx, argvs)
  for _, argv in ipairs(argvs or {}) do ctx.log("  " .. plan.argv_text(argv)) end
end

-- What the state keeps of a step the tool made.
local function record(step)
  return { id = step.id, what = step.what, inverse = step.inverse or {}, probe = step.probe,
           owns = step.owns, touches = step.touches, shared = step.shared }
end

-- ---- Interfaces netbe made: the marker and the ifindex ----

-- What OWNS's interface is now: "gone", "mine" or "foreign", the ifindex
-- seen, and for "foreign" the marker found (or nil).
function plan.identify(owns, run)
  local ok, out = run(owns.show)
  if not ok then return "gone" end
  local marker = out:match(owns.marker_pattern)
  local index = owns.index_pattern and tonumber(out:match(owns.index_pattern))
  if marker ~= owns.marker then return "foreign", index, marker end
  return "mine", index
end

-- Records the ifindex of the interface STEP just made in REC.owns.
local function note_index(step, rec, run)
  if not step.owns or not step.owns.index_pattern then return end
  local verdict, index = plan.identify(step.owns, run)
  if verdict == "mine" and index then
    rec.owns = {}
    for k, v in pairs(step.owns) do rec.owns[k] = v end
    rec.owns.ifindex = index
  end
end

-- Whether record R may be undone: false and why when the interface it made
-- (owns), or one it changed (touches), is not netbe's now. VERDICTS caches
-- plan.identify by interface name, from the records in CTX.made.
local function ours(r, ctx, verdicts)
  local function verdict(ifname)
    if verdicts[ifname] == nil then
      verdicts[ifname] = false
      for _, m in ipairs(ctx.made) do
        if m.owns and m.owns.ifname == ifname then
          local v, index, marker = plan.identify(m.owns, ctx.run)
          verdicts[ifname] = { v, index, marker, m.owns }
        end
      end
    end
    return verdicts[ifname]
  end
  for _, name in ipairs(r.owns and { r.owns.ifname } or r.touches or {}) do
    local v = verdict(name)
    if v and v[1] == "foreign" then
      return false, string.format("%s is not the interface netbe made (%s, expected marker %s)",
                                  name, v[3] and "its marker is " .. v[3] or "it has no marker",
                                  v[4].marker)
    end
    if v and v[1] == "mine" and r.owns and v[4].ifindex and v[2] ~= v[4].ifindex then
      ctx.log(string.format("# %s has ifindex %s, not %d as made: made again (a reboot?); "
                            .. "its marker %s says it is netbe's", name, tostring(v[2]),
                            v[4].ifindex, v[4].marker))
    end
  end
  return true
end

-- ---- Host settings topologies share ----

-- Where CTX keeps shared setting S: one entry per namespace.
local function shared_key(s, ctx)
  return s.name .. (ctx.scope and "@netns:" .. ctx.scope or "")
end

-- The current value of shared setting S, or nil and an error.
local function shared_value(s, run)
  local ok, out = run(s.get)
  if not ok then return nil, plan.argv_text(s.get) .. ": " .. out:gsub("%s+$", "") end
  return (out:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Sets shared setting S to VALUE; returns ok, or false and an error.
local function shared_set(s, value, ctx)
  local argv = {}
  for i, a in ipairs(s.set) do argv[i] = a end
  argv[#argv + 1] = s.name .. "=" .. value
  ctx.log(plan.argv_text(argv))
  local ok, out = ctx.run(argv)
  if not ok then return false, string.format("'%s' failed: %s", plan.argv_text(argv), out:gsub("%s+$", "")) end
  return true
end

-- Registers ctx.user as needing the shared setting of STEP, recording the
-- value before netbe first changed it, and sets it when it differs.
-- Returns ok (and whether it changed anything), or false and an error.
function plan.share(step, ctx)
  local s, key = step.shared, shared_key(step.shared, ctx)
  return ctx.host(function(settings)
    local now, err = shared_value(s, ctx.run)
    if not now then return false, err end
    local e = settings[key] or { old = now, users = {} }
    local changed = now ~= s.value
    if changed then
      ctx.log("# " .. step.what)
      local ok, serr = shared_set(s, s.value, ctx)
      if not ok then return false, serr end
    end
    e.users[ctx.user] = true
    settings[key] = e
    return true, changed
  end)
end

-- Unregisters ctx.user from the shared setting of record R; the last
-- topology to leave restores the value from before netbe changed it.
-- Returns the errors (a list, empty when all went well).
function plan.unshare(r, ctx)
  local s, key = r.shared, shared_key(r.shared, ctx)
  return ctx.host(function(settings)
    local e = settings[key]
    if not e or not e.users[ctx.user] then return {} end
    e.users[ctx.user] = nil
    local others = {}
    for u in pairs(e.users) do others[#others + 1] = u end
    if #others > 0 then
      table.sort(others)
      ctx.log("# " .. s.name .. " stays " .. s.value .. ": topologies " .. table.concat(others, ", ")
              .. " still need it")
      return {}
    end
    settings[key] = nil
    local now, err = shared_value(s, ctx.run)
    if not now then return { err } end
    if now == e.old then return {} end
    local ok, serr = shared_set(s, e.old, ctx)
    return ok and {} or { serr }
  end)
end

-- Undoes record R: its inverse, or the release of its shared setting.
-- Returns the errors.
local function undo_record(r, ctx)
  if r.shared then return plan.unshare(r, ctx) end
  return plan.undo(r.inverse, ctx.run, ctx.log)
end

-- Applies STEPS. CTX: run (runner), log (function(line)), dry (bool),
-- made (list of records from the state; extended in place), save
-- (function() persisting ctx.made). Returns ok, summary-or-error.
function plan.apply(steps, ctx)
  local made_now, in_place = {}, 0
  local removed, rerr = plan.prune(steps, ctx)
  if not removed then return false, rerr end
  local known = {}
  for _, r in ipairs(ctx.made) do known[r.id] = true end
  local changed, cache = {}, {}
  for _, step in ipairs(steps) do
    local dep = step.follows and changed[step.follows]
    local here = plan.probe(step, ctx.run, cache)
    local why = dep and here and " (again: " .. step.follows .. " changed)" or ""
    if step.shared and not ctx.dry then
      -- Every topology that needs it registers, even when it is in place.
      local ok, res = plan.share(step, ctx)
      if not ok then return plan.rollback(made_now, ctx, step.what .. ": " .. res) end
      if res then
        made_now[#made_now + 1] = step
        cache = {}
      else
        in_place = in_place + 1
      end
      if not known[step.id] then
        ctx.made[#ctx.made + 1] = record(step)
        known[step.id] = true
        ctx.save()
      end
    elseif here and not dep then
      in_place = in_place + 1
    elseif step.refuse then
      return plan.rollback(made_now, ctx, "refused: " .. step.refuse)
    elseif ctx.dry then
      ctx.log("would run (" .. step.what .. why .. "):")
      if here then log_argvs(ctx, step.stop) end
      log_argvs(ctx, step.run)
      if step.write then ctx.log("  write " .. step.write.path) end
      made_now[#made_now + 1] = step
      changed[step.id] = true
    else
      ctx.log("# " .. step.what .. why)
      cache = {}
      local ok, err, partial = true, nil, false
      if here and step.stop then ok, err = plan.stop(step, ctx) end
      if ok then ok, err, partial = plan.execute(step, ctx.run, ctx.log) end
      if not ok then
        -- A step that failed halfway left part of itself behind: undo it too.
        if partial then made_now[#made_now + 1] = step end
        return plan.rollback(made_now, ctx, step.what .. ": " .. err)
      end
      made_now[#made_now + 1] = step
      changed[step.id] = true
      if not known[step.id] then
        ctx.made[#ctx.made + 1] = record(step)
        known[step.id] = true
      end
      for _, r in ipairs(ctx.made) do
        if r.id == step.id then note_index(step, r, ctx.run) end
      end
      ctx.save()
    end
  end
  local gone = removed > 0 and string.format(", %d steps no longer in the topology undone", removed) or ""
  if ctx.dry then
    return true, string.format("dry run: %d steps would run, %d already in place%s",
                               #made_now, in_place, gone)
  end
  if #made_now == 0 and removed == 0 then
    return true, string.format("nothing to do: all %d steps already in place", in_place)
  end
  return true, string.format("%d steps made, %d already in place%s", #made_now, in_place, gone)
end

-- Stops a running step (a daemon whose config changed) and waits up to
-- five seconds for its probe to say it is gone, so the new one can bind.
function plan.stop(step, ctx)
  local errs = plan.undo(step.stop, ctx.run, ctx.log)
  if #errs > 0 then return false, errs[1] end
  for _ = 1, 50 do
    if not plan.probe(step, ctx.run) then return true end
    ctx.run({ "sleep", "0.1" })
  end
  return false, "still running five seconds after it was told to stop"
end

-- Undoes, newest first, the recorded steps that the topology no longer has
-- (a VM or switch removed from the file), before anything new is made, so
-- an old inverse never undoes a new step. Returns how many, or nil and an
-- error.
function plan.prune(steps, ctx)
  local want = {}
  for _, s in ipairs(steps) do want[s.id] = true end
  local n = 0
  for i = #ctx.made, 1, -1 do
    local r = ctx.made[i]
    if not want[r.id] then
      n = n + 1
      if ctx.dry then
        ctx.log("would undo (" .. r.what .. ", no longer in the topology):")
        log_argvs(ctx, r.inverse)
      else
        ctx.log("# undo " .. r.what .. " (no longer in the topology)")
        local mine, why = ours(r, ctx, {})
        if not mine then
          ctx.log("# left alone: " .. why)
        elseif r.shared or not r.probe or plan.probe(r, ctx.run) then
          local errs = undo_record(r, ctx)
          if #errs > 0 then
            return nil, "undoing '" .. r.what .. "' failed: " .. table.concat(errs, "; ")
          end
        end
        table.remove(ctx.made, i)
        ctx.save()
      end
    end
  end
  return n
end

-- Undoes the steps made by this apply, newest first, and drops them from
-- the state. Returns false and a message saying what failed and what was undone.
function plan.rollback(made_now, ctx, why)
  if ctx.dry or #made_now == 0 then return false, why end
  ctx.log("# rolling back " .. #made_now .. " steps: " .. why)
  local errs = {}
  local drop = {}
  for i = #made_now, 1, -1 do
    local step = made_now[i]
    for _, e in ipairs(undo_record(step, ctx)) do errs[#errs + 1] = e end
    drop[step.id] = true
  end
  for i = #ctx.made, 1, -1 do
    if drop[ctx.made[i].id] then table.remove(ctx.made, i) end
  end
  ctx.save()
  local msg = why .. string.format("; rolled back %d steps", #made_now)
  if #errs > 0 then msg = msg .. "; undo errors: " .. table.concat(errs, "; ") end
  return false, msg
end

-- Undoes every recorded step, newest first. A step whose probe says it is
-- already gone is skipped; so is one whose interface is not netbe's now
-- (see owns and touches), and destroy says so. A shared setting is
-- released whatever its probe says. Returns ok, summary.
function plan.destroy(ctx)
  local errs, undone, gone, left, verdicts = {}, 0, 0, 0, {}
  for i = #ctx.made, 1, -1 do
    local r = ctx.made[i]
    local mine, why = ours(r, ctx, verdicts)
    if not mine then
      left = left + 1
      ctx.log("# left alone: " .. r.what .. ": " .. why)
    elseif r.probe and not r.shared and not plan.probe(r, ctx.run) then
      gone = gone + 1
      ctx.log("# already gone: " .. r.what)
    elseif ctx.dry then
      ctx.log("would undo (" .. r.what .. "):")
      log_argvs(ctx, r.inverse)
      undone = undone + 1
    else
      ctx.log("# undo " .. r.what)
      for _, e in ipairs(undo_record(r, ctx)) do errs[#errs + 1] = e end
      undone = undone + 1
    end
    if not ctx.dry then ctx.made[i] = nil; ctx.save() end
  end
  if #errs > 0 then return false, "some undo commands failed: " .. table.concat(errs, "; ") end
  return true, string.format("%d steps undone, %d already gone%s", undone, gone,
                             left > 0 and string.format(", %d left alone (not netbe's)", left) or "")
end

-- Compares intent with the host. Returns a list of { step, state } where
-- state is "ok", "missing" (never made), "drift" (made by the tool, gone
-- or changed now) or "stale" (made by the tool, no longer in the topology;
-- the next apply undoes it), and whether everything is in place.
function plan.status(steps, ctx)
  local mine = {}
  for _, r in ipairs(ctx.made) do mine[r.id] = true end
  local rows, all_ok, cache = {}, true, {}
  for _, step in ipairs(steps) do
    local state
    if plan.probe(step, ctx.run, cache) then state = "ok"
    elseif mine[step.id] then state = "drift"
    else state = "missing" end
    if state ~= "ok" then all_ok = false end
    rows[#rows + 1] = { step = step, state = state, mine = mine[step.id] }
  end
  local want = {}
  for _, s in ipairs(steps) do want[s.id] = true end
  for _, r in ipairs(ctx.made) do
    if not want[r.id] then
      rows[#rows + 1] = { step = r, state = "stale", mine = true }
      all_ok = false
    end
  end
  return rows, all_ok
end

-- STEPS with the checks (steps with `refuse`) moved first, in their order,
-- so a refusal happens before anything is made.
function plan.checks_first(steps)
  local out, rest = {}, {}
  for _, s in ipairs(steps) do
    if s.refuse then out[#out + 1] = s else rest[#rest + 1] = s end
  end
  return table.move(rest, 1, #rest, #out + 1, out)
end

-- The step for a switch that uses an existing bridge: nothing is made, the
-- plan refuses to go on when PROBE says the interface is missing.
function plan.existing_switch(sw, probe)
  return { id = "exists:" .. sw.ifname, what = "check that bridge " .. sw.ifname .. " exists",
           probe = probe,
           refuse = "switch " .. sw.name .. " uses the existing interface " .. sw.ifname
             .. ", which does not exist; create it first or change the switch type" }
end

-- The step that sets sysctl NAME to VALUE (plain digits) as a host setting
-- topologies share (see shared); SET is the argv prefix that takes
-- "NAME=VALUE".
function plan.sysctl_step(id, what, name, value, set)
  local argv = table.move(set, 1, #set, 1, {})
  argv[#argv + 1] = name .. "=" .. value
  return { id = id, what = what, run = { argv },
           probe = { { argv = { "sysctl", "-n", name }, match = "^" .. value .. "%s*$" } },
           shared = { name = name, value = value, get = { "sysctl", "-n", name }, set = set },
           inverse = {} }
end

-- The step that writes CONTENT to PATH; in place while the file holds it.
function plan.write_step(id, what, path, content)
  return { id = id, what = what, write = { path = path, content = content },
           probe = { { file = path, content = content } },
           inverse = { { "rm", "-f", path } } }
end

-- Every command STEPS run, in order, as text ("write PATH" for a file).
function plan.commands(steps)
  local out = {}
  for _, s in ipairs(steps) do
    for _, argv in ipairs(s.run or {}) do out[#out + 1] = plan.argv_text(argv) end
    if s.write then out[#out + 1] = "write " .. s.write.path end
  end
  return out
end

-- The plan as text: every step with its argv, probe and inverse.
function plan.format(steps)
  local out = {}
  local function add(s) out[#out + 1] = s end
  for i, step in ipairs(steps) do
    add(string.format("%d. %s  [%s]", i, step.what, step.id))
    if step.refuse then add("   requires: " .. step.refuse:gsub("\n", "\n             ")) end
    for _, argv in ipairs(step.run or {}) do add("   run:     " .. plan.argv_text(argv)) end
    if step.rename then
      for _, tmpl in ipairs(step.rename.argv) do
        add("   then:    " .. plan.argv_text(plan.substitute(tmpl, "<created>"))
            .. "   (unless the kernel picked " .. step.rename.to .. ")")
      end
    end
    if step.write then
      add("   write:   " .. step.write.path)
      for line in step.write.content:gmatch("[^\n]+") do add("            | " .. line) end
    end
    for _, c in ipairs(step.probe or {}) do
      if c.file then
        add("   probe:   " .. c.file .. " has this content")
      else
        local cond = c.plain and (" shows '" .. c.plain .. "'") or c.match and (" matches " .. c.match)
          or c.nomatch and (" does not match " .. c.nomatch) or " succeeds"
        add("   probe:   " .. plan.argv_text(c.argv) .. cond)
      end
    end
    if step.follows then add("   again:   when step " .. step.follows .. " changes") end
    for _, argv in ipairs(step.stop or {}) do add("   stop:    " .. plan.argv_text(argv)) end
    for _, argv in ipairs(step.inverse or {}) do add("   undo:    " .. plan.argv_text(argv)) end
    if step.shared then
      add("   undo:    " .. plan.argv_text(step.shared.set) .. " " .. step.shared.name
          .. "=<the value before netbe>, once no netbe topology needs it")
    end
    if step.owns then
      add("   marks:   " .. step.owns.ifname .. " as " .. step.owns.marker
          .. "; undo only while it carries that marker")
    end
    if step.script then
      add("   as one ngctl script (ngctl -f-):")
      for line in step.script:gmatch("[^\n]+") do add("            | " .. line) end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

return plan
