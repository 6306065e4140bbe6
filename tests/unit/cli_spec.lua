-- Every command-line mistake ends in one line on stderr that says what is
-- wrong, nothing on stdout, and a non-zero exit status (2 for bad usage):
-- never a Lua traceback. The permission options of wire and check.
local ns = require("ns")

local netbe_cmd = ns.root .. "/scripts/netbe"
local NAT = ns.root .. "/examples/topologies/nat.lua"

-- Runs `netbe ARGS` (PREFIX before it), for at most 20 seconds; returns
-- exit code, stdout, stderr.
local function run(args, prefix)
  local dir = ns.tmpdir()
  local p = io.popen(string.format("timeout -k 1 20 %s%s %s >%s/out 2>%s/err </dev/null; echo $?",
                                   prefix or "", netbe_cmd, args, dir, dir))
  local code = tonumber(p:read("a"))
  p:close()
  return code, ns.read(dir .. "/out"), ns.read(dir .. "/err")
end

-- `netbe ARGS` must fail with CODE and one line on stderr holding TEXT.
local function mistake(code, text, args, prefix)
  local got, out, err = run(args, prefix)
  assert.equal(code, got, "netbe " .. args .. ": " .. out .. err)
  assert.equal("", out, "netbe " .. args .. " printed on stdout")
  assert.matches("^netbe: [^\n]*\n$", err, 1)
  assert.is_nil(err:find("traceback", 1, true))
  assert.truthy(err:find(text, 1, true), "netbe " .. args .. ": expected '" .. text .. "' in: " .. err)
end

describe("netbe command-line mistakes", function()
  teardown(ns.cleanup)

  it("a missing or unknown command", function()
    mistake(2, "no command given (expected wire, serve, ctl, check, plan", "")
    mistake(2, "unknown command 'bogus' (expected wire, serve, ctl, check, plan", "bogus")
    mistake(2, "unknown command '--bogus'", "--bogus")
  end)

  it("wire and check: arguments and options", function()
    mistake(2, "wire: expected two backend specs, got 1", "wire null")
    mistake(2, "wire: unknown option --bogus", "wire null null --bogus")
    mistake(2, "wire: --stats needs a value", "wire null null --stats")
    mistake(2, "wire: --stats wants a positive number of seconds, got '0'", "wire null null --stats 0")
    mistake(2, "wire: --allow-files needs a value", "wire null null --allow-files")
    mistake(1, "wire: /nonexistent: cannot read the policy file: No such file or directory", "wire null null --policy /nonexistent")
    mistake(1, "wire: backend 'bogus' matches no backend", "wire bogus null")
    mistake(2, "check: expected one backend spec, got 2", "check null null")
    mistake(2, "check: unknown option --allow", "check null --allow")
    mistake(1, "check: allowed files directory '/nonexistent-netbe': No such file", "check null --allow-files /nonexistent-netbe")
    mistake(1, "check: mac '+2:+a:00:00:00:01': expected six hex bytes", "check 'tap0,mac=+2:+a:00:00:00:01'")
  end)

  it("topology commands: files, options, systems", function()
    local dir = ns.tmpdir()
    mistake(2, "plan: expected one topology file, got 0 ('netbe help' shows the usage)", "plan")
    mistake(2, "plan: expected one topology file, got 2", "plan " .. NAT .. " " .. NAT)
    mistake(2, "plan: unknown option --bogus", "plan " .. NAT .. " --bogus")
    mistake(2, "plan: --os needs a value", "plan " .. NAT .. " --os")
    mistake(2, "plan: --os wants freebsd or linux, got 'windows'", "plan " .. NAT .. " --os windows")
    mistake(2, "bhyve-args: --vm needs a value", "bhyve-args " .. NAT .. " --vm")
    mistake(2, "status: --netns needs a value", "status " .. NAT .. " --netns")
    mistake(2, "destroy: --netns is for --os linux", "destroy " .. NAT .. " --os freebsd --netns x")
    mistake(2, "apply: --os freebsd on a linux host", "apply " .. NAT .. " --os freebsd")
    mistake(1, "/nonexistent/t.lua: cannot read the topology file", "plan /nonexistent/t.lua")
    mistake(1, "", "plan " .. dir)
    mistake(1, "", "plan " .. dir .. "/")
    local syntax = ns.write(dir .. "/syntax.lua", "switches = {\n  b = { type = 'bridge' ,, }\n}\n")
    mistake(1, syntax .. ":2: ", "plan " .. syntax)
    local locked = ns.write(dir .. "/locked.lua", "name = 'locked'\n")
    ns.sh("chmod 000 " .. locked .. " && chmod 755 " .. dir)
    mistake(1, locked .. ": cannot read the topology file: Permission denied",
            "plan " .. locked, "setpriv --reuid=65534 --regid=65534 --clear-groups ")
  end)
end)

describe("netbe files a user wrote badly", function()
  teardown(ns.cleanup)

  it("a file nested past Lua's parser: one line naming the file", function()
    local dir = ns.tmpdir()
    local topo = ns.write(dir .. "/deep.lua", "name = 't'\nx = " .. ("{"):rep(300) ..
                          ("}"):rep(300) .. "\n")
    local pol = ns.write(dir .. "/deep-policy.lua", "rule { name = 'r', len = " ..
                         ("("):rep(300) .. "1" .. (")"):rep(300) .. " }\n")
    local why = ": nested too deeply for Lua's parser (C stack overflow): use fewer levels"
    mistake(1, topo .. why, "plan " .. topo .. " --os linux")
    mistake(1, "wire: " .. pol .. why, "wire null null --policy " .. pol)
  end)

  it("values with control characters: still one line, as netbe's own messages", function()
    local dir = ns.tmpdir()
    local topo = ns.write(dir .. "/ctl.lua", "name = 't'\nswitches = { ['a\\nb'] = { " ..
                          "type = 'bridge' } }\n")
    local pol = ns.write(dir .. "/ctl-policy.lua", "rule { name = 'r', action = 'rate', " ..
                         "rate = 'a\\nb' }\n")
    mistake(1, topo .. ": switches.a?b: expected a switch name", "plan " .. topo .. " --os linux")
    mistake(1, "wire: " .. pol .. ":1: rule 'r': rate 'a?b': expected a positive number",
            "wire null null --policy " .. pol)
    mistake(2, "unknown command 'bo?gus'", "\"$(printf 'bo\\ngus')\"")
  end)
end)

describe("netbe permissions", function()
  teardown(ns.cleanup)

  it("check names each option that needs one, and accepts it when given", function()
    local dir = ns.tmpdir()
    local spec = "'slirp,guestfwd=tcp:10.0.2.100:1-cmd:id,tftp=" .. dir .. ",hostfwd=unix:" .. dir .. "/s-:22'"
    mistake(1, "check: slirp: not allowed by the embedder: guestfwd runs a host command (needs exec); tftp '"
            .. dir .. "' is a host path (needs files); hostfwd '" .. dir .. "/s' is a host path (needs files)",
            "check " .. spec)
    mistake(1, "hostfwd '" .. dir .. "/s' is a host path (needs files)", "check " .. spec .. " --allow-exec")
    mistake(1, "guestfwd runs a host command (needs exec)", "check " .. spec .. " --allow-files " .. dir)
    mistake(1, "tftp '/etc' lies in /etc, outside the allowed " .. dir,
            "check slirp,tftp=/etc --allow-files " .. dir)
    local code, out, err = run("check " .. spec .. " --allow-exec --allow-files " .. dir)
    assert.equal(0, code, err)
    assert.matches("check: ok, slirp backend, 5 keys, uses permissions: exec, files\n$", out)
    code, out = run("check stream,connect=127.0.0.1:5000")
    assert.equal(0, code)
    assert.matches("check: ok, stream backend, 3 keys\n$", out)
  end)

  it("wire refuses a socket path without --allow-files and listens with it", function()
    local dir = ns.tmpdir()
    local spec = "'stream,listen=unix:" .. dir .. "/s.sock'"
    mistake(1, "wire: stream: not allowed by the embedder: listen '" .. dir .. "/s.sock' is a host path",
            "wire null " .. spec)
    local code, out, err = run("wire null " .. spec .. " --allow-files " .. dir, "timeout --preserve-status -s INT 2 ")
    assert.equal(0, code, err)
    assert.matches("wire: stopped by SIGINT", out)
    assert.is_false(ns.sh("test -e " .. dir .. "/s.sock"), "wire removed its socket at the end")
  end)

  it("the Lua module takes them as a second argument", function()
    local netbe = require("netbe")
    local dir = ns.tmpdir()
    local cfg, msg = netbe.check("stream,listen=unix:" .. dir .. "/s")
    assert.is_nil(cfg)
    assert.matches("needs files", msg)
    local keys, needs
    cfg, keys, needs = netbe.check("stream,listen=unix:" .. dir .. "/s", { allow_files = dir })
    assert.equal("unix:" .. dir .. "/s", cfg.listen)
    assert.same({ "files" }, needs)
    assert.has_error(function() netbe.check("null", { allow_everything = true }) end,
      "netbe: permission 'allow_everything': expected allow_exec = true|false or allow_files = DIRECTORY")
    assert.has_error(function() netbe.open("stream,listen=unix:" .. dir .. "/s") end)
    local be = netbe.open("stream,listen=unix:" .. dir .. "/s", { allow_files = dir })
    assert.is_true(ns.sh("test -S " .. dir .. "/s"))
    be:close()
    assert.is_false(ns.sh("test -e " .. dir .. "/s"))
    assert.is_nil(netbe.parse_mac(" 2: a:00:00:00:01"))
  end)
end)
