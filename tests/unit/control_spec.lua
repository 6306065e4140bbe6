-- The control socket of `netbe wire` and `netbe serve`, and `netbe ctl`,
-- with null and stream backends (nothing leaves the process but its
-- UNIX sockets, in the test's own directory): every command, every kind
-- of bad request, the socket's mode and its removal, metrics through a
-- real Prometheus parser, and --json stats.
local ns = require("ns")
local json = require("dkjson")
local netbe = require("netbe")
local cc = require("control_client")

local start, ask, call = cc.start, cc.ask, cc.call

-- `netbe ctl ARGS`: exit code, stdout, stderr.
local function ctl(args)
  local dir = ns.tmpdir()
  local p = io.popen(string.format("timeout 20 %s ctl %s >%s/out 2>%s/err; echo $?", ns.netbe, args,
                                   dir, dir))
  local code = tonumber(p:read("a"))
  p:close()
  return code, ns.read(dir .. "/out"), ns.read(dir .. "/err")
end

local function mode_of(path)
  local _, out = ns.sh("stat -c %a " .. ns.quote(path))
  return out:match("%d+")
end

describe("netbe wire --control", function()
  teardown(ns.cleanup)

  it("answers every command, several requests on one connection", function()
    local pid, _, sock = start("wire null null --control unix:SOCK")
    local a = ask(sock, '{"execute":"version"}\n{"execute":"stats"}\n{"execute":"features"}\n'
                  .. '{"execute":"link","arguments":{"state":"down"}}\n{"execute":"metrics"}\n')
    assert.equal(5, #a)
    assert.equal(netbe.VERSION, a[1]["return"].version)
    local st = a[2]["return"].nics[1]
    assert.equal("wire", st.name)
    assert.equal("up", st.state)
    assert.equal("null", st.a.type)
    assert.equal(0, st.b.counters.rx_frames)
    assert.equal(0, st.wire.drops)
    assert.same({ "csum", "host_tso4", "host_tso6", "host_ecn", "host_ufo", "host_uso" },
                a[3]["return"].a.offered)
    assert.equal("down", a[4]["return"].link)
    assert.matches('netbe_link_up{nic="wire"} 0', a[5]["return"].text, 1, true)
    assert.equal("down", call(sock, "stats")["return"].nics[1].link)
    assert.equal("up", call(sock, "link", { state = "up" })["return"].link)
    assert.is_true(ns.alive(pid))
  end)

  it("gives each bad request an error object and keeps the wire", function()
    local pid, _, sock = start("wire null null --control unix:SOCK")
    local cases = {
      { "{not json", "cannot parse JSON" },
      { "[1, 2]", "cannot parse JSON: expected an object" },
      { '{"arguments": {}}', "no execute found" },
      { '{"execute": "reboot"}', "unknown execute 'reboot'" },
      { '{"execute": "stats", "arguments": 7}', "arguments: expected an object" },
      { '{"execute": "stats", "arguments": {"nic": "vm9"}}', "no NIC named 'vm9'" },
      { '{"execute": "link", "arguments": {"state": "sideways"}}', 'expected "up" or "down"' },
      { '{"execute": "hostfwd_add", "arguments": {"rule": "tcp::1-:2"}}', "has no slirp side" },
      { '{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 2}}',
        "bad request: add_hostfwd: bad arguments.proto" },
      { '{"execute": "policy_load", "arguments": {"path": "/etc/passwd"}}', "needs files" },
      { '{"execute": "policy_stats"}', "has no policy" },
      { '{"execute": "nic_add", "arguments": {"name": "x", "a": "null", "b": "null"}}',
        "runs one NIC" },
      { string.rep("x", 70000), "request longer than 65536 bytes" },
    }
    for _, c in ipairs(cases) do
      local a = ask(sock, c[1] .. "\n")
      assert.equal(1, #a, c[1]:sub(1, 80))
      assert.is_table(a[1].error, c[1]:sub(1, 80))
      assert.truthy(a[1].error.desc:find(c[2], 1, true), a[1].error.desc)
    end
    -- After an oversize line the next request on the same connection works.
    local a = ask(sock, string.rep("y", 100000) .. '\n{"execute":"version"}\n')
    assert.equal(2, #a)
    assert.is_table(a[1].error)
    assert.equal(netbe.VERSION, a[2]["return"].version)
    assert.is_true(ns.alive(pid))
  end)

  it("takes a request that ends at the client's EOF, as slirp4netns's clients send it", function()
    local _, _, sock = start("wire null null --control unix:SOCK")
    local out = assert(netbe.control_call(sock, '{"execute": "version"}'))
    assert.equal('{"return":{"version":"' .. netbe.VERSION .. '"}}\n', out)
  end)

  it("creates the socket 0600 or --control-mode, removes it on exit, and only its own", function()
    local pid, _, sock = start("wire null null --control unix:SOCK")
    assert.equal("600", mode_of(sock))
    ns.kill(pid, "TERM")
    assert.is_false(ns.sh("test -e " .. sock), "the socket outlived the wire")
    pid, _, sock = start("wire null null --control unix:SOCK --control-mode 0660")
    assert.equal("660", mode_of(sock))
    -- A second wire on a live socket fails and leaves it alone.
    local ok, out = ns.sh(ns.netbe .. " wire null null --control unix:" .. sock)
    assert.is_false(ok)
    assert.matches("socket of a running process", out)
    assert.is_true(ns.sh("test -S " .. sock))
    ns.kill(pid, "TERM")
    -- A regular file at the path is never removed.
    local dir = ns.tmpdir()
    ns.write(dir .. "/f", "keep")
    ok, out = ns.sh(ns.netbe .. " wire null null --control unix:" .. dir .. "/f")
    assert.is_false(ok)
    assert.matches("netbe: wire: .*/f", out)
    assert.equal("keep", ns.read(dir .. "/f"))
    ok, out = ns.sh(ns.netbe .. " wire null null --control tcp:1 2>&1")
    assert.is_false(ok)
    assert.matches("expected unix:PATH", out)
    ok, out = ns.sh(ns.netbe .. " wire null null --control unix:/x --control-mode 999 2>&1")
    assert.is_false(ok)
    assert.matches("expected an octal mode", out)
  end)

  it("netbe ctl: text, --json, errors on stderr with exit 1", function()
    local _, _, sock = start("wire null null --control unix:SOCK")
    local code, out, err = ctl(sock .. " version")
    assert.equal(0, code, err)
    assert.equal("netbe " .. netbe.VERSION .. "\n", out)
    code, out = ctl(sock .. " stats")
    assert.equal(0, code)
    assert.matches("nic wire: up, link up\nnull +rx_frames=0 ", out)
    code, out = ctl(sock .. " link down --json")
    assert.equal(0, code)
    assert.equal("down", json.decode(out)["return"].link)
    code, out, err = ctl(sock .. " hostfwd_add tcp::1-:2")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^netbe: ctl: hostfwd_add: NIC 'wire' has no slirp side", err)
    code, _, err = ctl(sock .. " bogus")
    assert.equal(2, code)
    assert.matches("unknown command 'bogus'", err)
    code, _, err = ctl(ns.tmpdir() .. "/none version")
    assert.equal(1, code)
    assert.matches("No such file", err)
  end)

  it("metrics parse with Prometheus's own text parser, per-rule counters included", function()
    local dir = ns.tmpdir()
    local pol = ns.write(dir .. "/p.lua", 'rule { name = "count-all", action = "count" }\n'
                         .. 'rule { name = "arp", ethertype = "arp", action = "drop" }\n')
    local _, _, sock = start("wire null null --policy " .. pol .. " --control unix:SOCK")
    local text = call(sock, "metrics")["return"].text
    ns.write(dir .. "/m.txt", text)
    local ok, out = ns.sh("/usr/bin/python3 -c 'import sys\n" ..
      "from prometheus_client.parser import text_string_to_metric_families as p\n" ..
      "for f in p(open(sys.argv[1]).read()):\n" ..
      "    for s in f.samples: print(f.type, s.name, sorted(s.labels.items()), s.value)' " ..
      dir .. "/m.txt")
    assert.is_true(ok, out)
    assert.matches("counter netbe_rx_frames_total %[%('backend', 'null'%), %('nic', 'wire'%), " ..
                   "%('side', 'a'%)%] 0%.0", out)
    assert.matches("counter netbe_policy_rule_hits_total %[%('nic', 'wire'%), %('rule', 'arp'%)%] 0%.0",
                   out)
    assert.matches("gauge netbe_nic_up %[%('nic', 'wire'%)%] 1%.0", out)
    local ps = call(sock, "policy_stats")["return"]
    assert.equal("count-all", ps.rules[1].name)
    assert.equal(pol, ps.path)
    local r = call(sock, "policy_load")["return"]
    assert.equal(2, r.rules)
    assert.equal(1, call(sock, "policy_stats")["return"].reloads)
  end)

  it("--json prints each stats report as one JSON line, the last with why it stopped", function()
    local pid, log = start("wire null null --control unix:SOCK --json --stats 0.3")
    assert(ns.wait_for(function() return ns.read(log):find('"nics"', 1, true) end, 5))
    ns.kill(pid, "INT")
    local last
    for line in ns.read(log):gmatch("[^\n]+") do
      if line:sub(1, 1) == "{" then last = assert(json.decode(line), line) end
    end
    assert.equal("SIGINT", last.stopped)
    assert.equal("wire", last.nics[1].name)
    assert.is_number(last.nics[1].a.counters.tx_frames)
  end)
end)

describe("netbe serve --control", function()
  teardown(ns.cleanup)

  it("adds and removes NICs by name; a bad one fails alone", function()
    local pid, _, sock, dir = start("serve --control unix:SOCK --allow-files DIR")
    assert.same({}, call(sock, "stats")["return"].nics)
    local r = call(sock, "nic_add", { name = "vm0", a = "null", b = "stream,listen=unix:" .. dir .. "/vm0" })
    assert.equal("vm0", r["return"].nic)
    r = call(sock, "nic_add", { name = "vm1", a = "null", b = "bogus" })
    assert.matches("matches no backend", r.error.desc)
    r = call(sock, "nic_add", { name = "vm0", a = "null", b = "null" })
    assert.matches("exists already", r.error.desc)
    r = call(sock, "nic_add", { name = "vm2", a = "null", b = "stream,listen=unix:/tmp/x" })
    assert.matches("outside the allowed", r.error.desc)
    r = call(sock, "nic_add", { name = "bad name", a = "null", b = "null" })
    assert.matches("NIC name: expected", r.error.desc)
    assert.equal("ok", call(sock, "nic_add", { name = "vm1", a = "null", b = "null" })["return"]
                 and "ok")
    r = call(sock, "stats")
    assert.equal(2, #r["return"].nics)
    r = call(sock, "stats", { nic = "vm1" })
    assert.equal("vm1", r["return"].nics[1].name)
    assert.matches("runs 2 NICs: name one", call(sock, "features").error.desc)
    assert.equal("down", call(sock, "link", { nic = "vm1", state = "down" })["return"].link)
    assert.equal("up", call(sock, "stats", { nic = "vm0" })["return"].nics[1].link)
    assert.is_table(call(sock, "nic_remove", { name = "vm0" })["return"])
    assert.matches("no NIC named 'vm0'", call(sock, "nic_remove", { name = "vm0" }).error.desc)
    assert.is_false(ns.sh("test -e " .. dir .. "/vm0"), "the NIC's socket outlived it")
    assert.equal(1, #call(sock, "stats")["return"].nics)
    assert.is_true(ns.alive(pid))
  end)

  it("keeps running when a NIC's side goes down, and reports it", function()
    local _, log, sock, dir = start("serve --control unix:SOCK --allow-files DIR")
    local srv = dir .. "/srv"
    assert.is_table(call(sock, "nic_add", { name = "server", a = "null",
                                            b = "stream,listen=unix:" .. srv })["return"])
    assert.is_table(call(sock, "nic_add", { name = "client", a = "null",
                                            b = "stream,connect=unix:" .. srv })["return"])
    assert.is_table(call(sock, "nic_remove", { name = "server" })["return"])
    assert(ns.wait_for(function()
      return call(sock, "stats", { nic = "client" })["return"].nics[1].state == "down"
    end, 5), "the client NIC never went down")
    local st = call(sock, "stats", { nic = "client" })["return"].nics[1]
    assert.matches("went down", st.down)
    assert.equal("null", st.a.name)
    assert.matches("NIC client: .*went down", ns.read(log))
    assert.equal(netbe.VERSION, call(sock, "version")["return"].version)
  end)

  it("adds and removes a NIC 100 times without leaking a descriptor", function()
    local pid, _, sock, dir = start("serve --control unix:SOCK --allow-files DIR")
    local function fds()
      local _, out = ns.sh("ls /proc/" .. pid .. "/fd | wc -l")
      return tonumber(out)
    end
    local spec = "stream,listen=unix:" .. dir .. "/n"
    call(sock, "nic_add", { name = "n", a = "null", b = spec })
    call(sock, "nic_remove", { name = "n" })
    local before = fds()
    for _ = 1, 100 do
      assert.is_table(call(sock, "nic_add", { name = "n", a = "null", b = spec })["return"])
      assert.is_table(call(sock, "nic_remove", { name = "n" })["return"])
    end
    assert.equal(before, fds())
  end)
end)
