-- --json of check, plan, status and bhyve-args: one JSON object on stdout
-- in the shapes the README documents, read back by a real parser (dkjson),
-- and the exit statuses of the text forms.
local ns = require("ns")
local json = require("dkjson")

local NAT = ns.root .. "/examples/topologies/nat.lua"

-- Runs `netbe ARGS` -> exit status, decoded stdout (or the raw text), stderr.
local function run(args)
  local dir = ns.tmpdir()
  local p = io.popen(string.format("NETBE_STATE_DIR=%s/state timeout 20 %s %s >%s/out 2>%s/err </dev/null; echo $?",
                                   dir, ns.quote(ns.netbe), args, dir, dir))
  local code = tonumber(p:read("a"))
  p:close()
  local out = ns.read(dir .. "/out")
  local v, _, err = json.decode(out)
  assert.is_nil(err, "not JSON: " .. out)
  assert.equals(1, select(2, out:gsub("\n", "")), "one line expected: " .. out)
  return code, v, ns.read(dir .. "/err")
end

describe("--json", function()
  teardown(ns.cleanup)

  it("check: the normalized config, its keys in order and the permissions used", function()
    local code, v = run("check --json 'tap0,mac=00:BE:FA:76:45:00'")
    assert.equals(0, code)
    assert.same({ ok = true, type = "tap", keys = { "backend", "mac", "type" },
                  config = { backend = "tap0", mac = "00:be:fa:76:45:00", type = "tap" },
                  permissions = {} }, v)
    code, v = run("check --json 'stream,connect=unix:/tmp/x.sock' --allow-files /tmp")
    assert.equals(0, code)
    assert.same({ "files" }, v.permissions)
  end)

  it("check: a bad config is {ok: false, error} and exit status 1", function()
    local code, v, err = run("check --json 'tap0,foo'")
    assert.equals(1, code)
    assert.is_false(v.ok)
    assert.matches("unknown key 'foo'", v.error)
    assert.matches("^netbe: check: ", err)
  end)

  it("plan: every step with its commands as argv lists", function()
    local code, v = run("plan " .. NAT .. " --os linux --json")
    assert.equals(0, code)
    assert.same({ true, "natlab", "linux" }, { v.ok, v.topology, v.os })
    local first = v.steps[1]
    assert.equals("bridge:natnet", first.id)
    assert.same({ "ip", "link", "add", "name", "natnet", "type", "bridge" }, first.run[1])
    assert.same({ "ip", "link", "del", "dev", "natnet" }, first.undo[1])
    assert.same({ "ip", "-o", "link", "show", "dev", "natnet" }, first.probe[1].argv)
    assert.is_nil(first.requires)
  end)

  it("bhyve-args: each VM's NICs, bhyve and netbe forms", function()
    local code, v = run("bhyve-args " .. NAT .. " --json")
    assert.equals(0, code)
    local nic = v.vms[1].nics[1]
    assert.same({ "app", 0, "tap", "natnet", "-s 5:0,virtio-net,tap2,mac=58:9c:fc:00:00:02",
                  "tap2,mac=58:9c:fc:00:00:02" },
                { v.vms[1].name, nic.index, nic.type, nic.switch, nic.bhyve, nic.netbe })
    code, v = run("bhyve-args " .. NAT .. " --vm nope --json")
    assert.equals(1, code)
    assert.same({ ok = false, error = "bhyve-args: no VM named 'nope' in topology natlab" }, v)
  end)

  it("status: each step's state and the counts; exit 1 when steps are missing", function()
    local code, v = run("status " .. NAT .. " --os linux --json")
    assert.equals(1, code)
    assert.is_false(v.ok)
    assert.equals("natlab", v.topology)
    assert.equals(#v.steps, v.counts.missing + v.counts.ok)
    assert.equals("bridge:natnet", v.steps[1].id)
    assert.equals("missing", v.steps[1].state)
  end)

  it("apply and destroy refuse --json as bad usage", function()
    local dir = ns.tmpdir()
    local p = io.popen(string.format("%s apply %s --json >%s/out 2>&1; echo $?", ns.quote(ns.netbe), NAT, dir))
    assert.equals(2, tonumber(p:read("a")))
    p:close()
    assert.matches("%-%-json is for plan, status and bhyve%-args", ns.read(dir .. "/out"))
  end)
end)
