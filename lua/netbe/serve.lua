-- netbe.serve: a set of named NICs in one process, each a wire between
-- two backends, and the loop that runs them. `netbe wire` is a set of one
-- NIC that ends when a side goes down; `netbe serve` keeps running and
-- marks such a NIC down, so one NIC failing never touches the others.
-- What a NIC is asked through the control socket (netbe.control) is
-- answered here, as plain tables.
local netbe = require("netbe")
local policy = require("netbe.policy")

local serve = {}

local Set = {}
Set.__index = Set

-- A new, empty set. PERM: the permissions every spec, forward and policy
-- path of the set gets ({allow_exec =, allow_files = DIR}), from the
-- command line; nothing received later adds to them.
function serve.new(perm)
  return setmetatable({ perm = perm or {}, nics = {}, order = {} }, Set)
end

-- NIC names: what a metric label and a text line can carry as they are.
local function check_name(name)
  if type(name) ~= "string" or not name:match("^[%w_.:/-]+$") or #name > 64 then
    return nil, string.format("NIC name: expected 1 to 64 letters, digits or _.:/-, got %s",
                              type(name) == "string" and "'" .. netbe.one_line(name) .. "'"
                              or type(name))
  end
  return name
end

-- The slirp side of NIC (A first), or nil and why there is none.
local function slirp_side(nic)
  if nic.down then return nil, "NIC '" .. nic.name .. "' is down: " .. nic.down end
  for _, be in ipairs({ nic.a, nic.b }) do
    if be:type() == "slirp" then return be end
  end
  return nil, "NIC '" .. nic.name .. "' has no slirp side (hostfwd needs one)"
end

-- Give every forward of NIC's slirp side an id, as slirp4netns does
-- (from 1, never reused); forget the ids of forwards gone. Returns the
-- ids of forwards new since the last call.
local function sync_ids(nic)
  local be = slirp_side(nic)
  local new = {}
  if not be then return new end
  local live = {}
  for _, rule in ipairs(be:hostfwd_list()) do
    live[rule] = true
    if not nic.fwd_id[rule] then
      nic.next_id = nic.next_id + 1
      nic.fwd_id[rule] = nic.next_id
      new[#new + 1] = nic.next_id
    end
  end
  for rule in pairs(nic.fwd_id) do
    if not live[rule] then nic.fwd_id[rule] = nil end
  end
  return new
end

-- Add NIC NAME: open SPEC_A and SPEC_B (B faces the guest), wire them,
-- and load OPT.policy (a path) when given. OPT.offload false: no offload
-- negotiation; OPT.perm_b: permissions for B instead of the set's (serve
-- opens the sockets of its own directory). Returns the NIC, or nil and
-- why; nothing stays open then.
function Set:add(name, spec_a, spec_b, opt)
  opt = opt or {}
  local n, err = check_name(name)
  if not n then return nil, err end
  if self.nics[name] then return nil, "NIC '" .. name .. "' exists already" end
  if type(spec_a) ~= "string" or type(spec_b) ~= "string" then
    return nil, "NIC '" .. name .. "': expected two backend specs"
  end
  local ok, a = pcall(netbe.open, spec_a, self.perm)
  if not ok then return nil, netbe.one_line(a) end
  local b
  ok, b = pcall(netbe.open, spec_b, opt.perm_b or self.perm)
  if not ok then a:close(); return nil, netbe.one_line(b) end
  local w
  ok, w = pcall(netbe.wire, a, b, { offload = opt.offload ~= false })
  if not ok then a:close(); b:close(); return nil, netbe.one_line(w) end
  local nic = { name = name, a = a, b = b, wire = w, fwd_id = {}, next_id = 0 }
  if opt.policy then
    local count, e = policy.apply(w, opt.policy)
    if not count then w:close(); a:close(); b:close(); return nil, e end
    nic.policy_path, nic.policy_rules = opt.policy, count
  end
  sync_ids(nic)
  self.nics[name] = nic
  self.order[#self.order + 1] = name
  return nic
end

-- Keep NAME in the set as down, with WHY: for a NIC that failed to open
-- (serve's topology start) so that stats report it.
function Set:add_failed(name, why)
  local nic = { name = name, down = why, fwd_id = {}, next_id = 0 }
  self.nics[name] = nic
  self.order[#self.order + 1] = name
  return nic
end

-- The NIC NAME; NAME nil: the set's only NIC. nil and why when none.
function Set:get(name)
  if name == nil then
    if #self.order == 1 then return self.nics[self.order[1]] end
    return nil, string.format("this process runs %d NICs: name one", #self.order)
  end
  if type(name) ~= "string" then return nil, "NIC name: expected a string" end
  local nic = self.nics[name]
  if not nic then return nil, "no NIC named '" .. netbe.one_line(name) .. "'" end
  return nic
end

local COUNTERS = { "rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
                   "rx_drops", "tx_drops", "rx_errors", "tx_errors",
                   "rx_bad_hdr", "tx_bad_hdr", "rx_sw_frames", "tx_sw_frames",
                   "tx_frags", "tx_frag_whole", "tx_frag_drops", "tx_frag_overlap",
                   "tx_frag_oversize", "tx_frag_timeout", "tx_frag_evicted" }
serve.COUNTERS = COUNTERS

-- Feature bits by name, in the order `netbe wire` prints them.
local FEATURES = { "CSUM", "GUEST_CSUM", "HOST_TSO4", "HOST_TSO6", "HOST_ECN", "HOST_UFO",
                   "HOST_USO", "GUEST_TSO4", "GUEST_TSO6", "GUEST_ECN", "GUEST_UFO",
                   "GUEST_USO4", "GUEST_USO6" }

-- The names of the feature bits BITS ({"csum", "host_tso4", ...}).
function serve.feature_names(bits)
  local names = {}
  for _, n in ipairs(FEATURES) do
    if bits & netbe["F_" .. n] ~= 0 then names[#names + 1] = n:lower() end
  end
  return names
end

local function side_stats(be)
  return { name = be:name(), type = be:type(), features = serve.feature_names(be:features()),
           counters = be:stats() }
end

-- The policy counters of NIC, with its path, or nil without a policy.
function serve.policy_stats(nic)
  local st = nic.wire and nic.wire:policy_stats()
  if st then st.path = nic.policy_path end
  return st
end

-- Every counter of NIC: both sides, the wire, the policy (the shape
-- README documents under "Control socket").
function serve.stats(nic)
  if nic.down then
    local last = nic.last or {}
    return { name = nic.name, state = "down", down = nic.down, link = "down",
             a = last.a, b = last.b, wire = last.wire, policy = last.policy }
  end
  local ws = nic.wire:stats()
  return { name = nic.name, state = "up", link = ws.link_up and "up" or "down",
           a = side_stats(nic.a), b = side_stats(nic.b),
           wire = { drops = ws.drops, link_drops_to_guest = ws.link_drops_to_guest,
                    link_drops_from_guest = ws.link_drops_from_guest },
           policy = serve.policy_stats(nic) }
end

-- Stats of every NIC, in the order they were added.
function Set:all_stats()
  local list = {}
  for _, name in ipairs(self.order) do list[#list + 1] = serve.stats(self.nics[name]) end
  return list
end

local function close_nic(nic)
  if nic.wire then nic.wire:close() end
  if nic.a then nic.a:close() end
  if nic.b then nic.b:close() end
  nic.wire, nic.a, nic.b = nil, nil, nil
end

-- Remove NIC NAME, closing both backends.
function Set:remove(name)
  local nic, err = self:get(name)
  if not nic then return nil, err end
  close_nic(nic)
  self.nics[nic.name] = nil
  for i, n in ipairs(self.order) do
    if n == nic.name then table.remove(self.order, i) break end
  end
  return true
end

-- Mark every NIC whose side went down as down: its counters are kept as
-- they were, its backends closed. Returns a list of {name, why} for the
-- NICs that went down now.
function Set:check_down()
  local gone = {}
  for _, name in ipairs(self.order) do
    local nic = self.nics[name]
    if not nic.down then
      for _, be in ipairs({ nic.a, nic.b }) do
        local why = be:down()
        if why and not nic.down then
          nic.last = serve.stats(nic)
          nic.down = be:name() .. " went down: " .. why
          gone[#gone + 1] = { name = name, why = nic.down }
        end
      end
      if nic.down then close_nic(nic) end
    end
  end
  return gone
end

function Set:close()
  for _, name in ipairs(self.order) do close_nic(self.nics[name]) end
  self.nics, self.order = {}, {}
end

-- ---- Forwards ----

-- Add forward RULE (netbe's hostfwd form) to NIC's slirp side -> its id.
function serve.hostfwd_add(nic, rule)
  local be, err = slirp_side(nic)
  if not be then return nil, err end
  if type(rule) ~= "string" then return nil, "hostfwd_add: expected a rule string" end
  local ok, e = be:hostfwd_add(rule)
  if not ok then return nil, e end
  local new = sync_ids(nic)
  return new[1] or nic.next_id
end

-- The forwards of NIC: {{id =, rule =}, ...} in id order.
function serve.hostfwd_list(nic)
  local be, err = slirp_side(nic)
  if not be then return nil, err end
  sync_ids(nic)
  local list = {}
  for rule, id in pairs(nic.fwd_id) do list[#list + 1] = { id = id, rule = rule } end
  table.sort(list, function(x, y) return x.id < y.id end)
  return list
end

-- Remove the forward with id ID, or whose host side RULE names.
function serve.hostfwd_remove(nic, id, rule)
  local be, err = slirp_side(nic)
  if not be then return nil, err end
  sync_ids(nic)
  if id ~= nil then
    rule = nil
    for r, i in pairs(nic.fwd_id) do
      if i == id then rule = r end
    end
    if not rule then return nil, "no forward with id " .. tostring(id) end
  elseif type(rule) ~= "string" then
    return nil, "hostfwd_remove: expected an id or a rule"
  end
  local ok, e = be:hostfwd_remove(rule)
  if not ok then return nil, e end
  sync_ids(nic)
  return true
end

-- ---- Policy ----

-- True when policy file PATH, received at run time, lies inside the
-- set's allowed files directory; else nil and why.
function Set:policy_path_ok(path)
  if type(path) ~= "string" then return nil, "policy path: expected a string" end
  if not self.perm.allow_files then
    return nil, "policy file '" .. netbe.one_line(path) .. "' is a host path (needs files: "
      .. "start with --allow-files DIR)"
  end
  local real, err = netbe.path_inside(path, self.perm.allow_files)
  if not real then return nil, "policy file " .. netbe.one_line(err) end
  return true
end

-- Load policy file PATH onto NIC, or its current file again when PATH is
-- nil. A path other than the current one must lie inside the set's
-- allowed files directory, as socket paths must: a policy file runs
-- sandboxed, but its errors quote it. Returns the rule count.
function Set:policy_load(nic, path)
  if nic.down then return nil, "NIC '" .. nic.name .. "' is down: " .. nic.down end
  if path == nil or path == nic.policy_path then
    path = nic.policy_path
    if not path then return nil, "NIC '" .. nic.name .. "' has no policy file to reload" end
  else
    local ok, err = self:policy_path_ok(path)
    if not ok then return nil, err end
  end
  local n, err = policy.apply(nic.wire, path)
  if not n then return nil, err end
  nic.policy_path, nic.policy_rules = path, n
  return n
end

-- ---- The loop ----

-- Run until SIGINT or SIGTERM. OPT: every (seconds between report()
-- calls, or nil), report(), on_hup(), on_down(name, why) (its string
-- return ends the run with that reason), tick() (called every tenth of a
-- second; a string it returns ends the run). Returns the reason.
function Set:run(opt)
  local elapsed, step = 0, math.min(opt.every or 1, opt.tick and 0.1 or 1)
  local function tick()
    for _, d in ipairs(self:check_down()) do
      local stop = opt.on_down and opt.on_down(d.name, d.why)
      if stop then return stop end
    end
    local stop = opt.tick and opt.tick()
    if stop then return stop end
    elapsed = elapsed + step
    if opt.every and elapsed + 1e-9 >= opt.every then elapsed = 0; opt.report() end
  end
  return netbe.run{ signals = true, every = step, tick = tick, on_signal = opt.on_hup }
end

return serve
