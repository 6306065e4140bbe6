-- `netbe slirp4netns`'s command line: slirp4netns 1.2's option forms, the
-- settings they give, and refusals (security options netbe would not
-- honour, unknown options, bad values) as one line and exit status 2.
local s4 = require("netbe.slirp4netns")
local ns = require("ns")

local function run(args)
  local dir = ns.tmpdir()
  local p = io.popen(string.format("timeout 20 %s slirp4netns %s >%s/out 2>%s/err </dev/null; echo $?",
                                   ns.quote(ns.netbe), args, dir, dir))
  local code = tonumber(p:read("a"))
  p:close()
  return code, ns.read(dir .. "/out"), ns.read(dir .. "/err")
end

describe("netbe slirp4netns options", function()
  teardown(ns.cleanup)

  it("takes long, long=value, short, attached and bundled forms", function()
    local pos, opt = s4.parse({ "-c", "-e3", "--ready-fd", "4", "--mtu=9000", "-a", "/x",
                                "--netns-type=path", "/run/netns/a", "tap0" })
    assert.same({ "/run/netns/a", "tap0" }, pos)
    assert.same({ configure = true, ["exit-fd"] = "3", ["ready-fd"] = "4", mtu = "9000",
                  ["api-socket"] = "/x", ["netns-type"] = "path" }, opt)
    pos, opt = s4.parse({ "-cm", "1400", "--", "-5", "tap0" })
    assert.same({ "-5", "tap0" }, pos)
    assert.same({ configure = true, mtu = "1400" }, opt)
  end)

  it("gives slirp4netns's addresses, from --cidr too", function()
    local st = s4.settings({ "42", "tap0" }, {})
    assert.equals("/proc/42/ns/net", st.netns)
    assert.equals("/proc/42/ns/user", st.userns)
    assert.same({ "10.0.2.0/24", "10.0.2.100", "10.0.2.2", "10.0.2.3", 1500 },
                { st.cidr, st.guest, st.gateway, st.dns, st.mtu })
    st = s4.settings({ "/run/netns/x", "tap0" }, { cidr = "192.168.7.9/20", ["netns-type"] = "path",
                                                   ["userns-path"] = "/u" })
    assert.same({ "192.168.0.0/20", "192.168.0.100", "192.168.0.2", "/run/netns/x", "/u" },
                { st.cidr, st.guest, st.gateway, st.netns, st.userns })
  end)

  it("lists in --help only what it implements", function()
    local code, out = run("--help")
    assert.equals(0, code)
    for _, o in ipairs({ "--configure", "--exit-fd", "--ready-fd", "--mtu", "--cidr",
                         "--disable-host-loopback", "--api-socket", "--netns-type", "--userns-path" }) do
      assert.truthy(out:find(o, 1, true), o)
    end
    for _, o in ipairs({ "sandbox", "seccomp", "--enable-ipv6", "--outbound-addr", "--disable-dns",
                         "--macaddress", "--target-type" }) do
      assert.is_nil(out:find(o, 1, true), o)
    end
  end)

  it("refuses security options and other mistakes in one line", function()
    local cases = {
      { "--enable-sandbox 1 tap0", "--enable-sandbox is not supported" },
      { "--enable-seccomp 1 tap0", "--enable-seccomp is not supported" },
      { "--enable-ipv6 1 tap0", "unknown option --enable-ipv6" },
      { "-6 1 tap0", "unknown option -6" },
      { "--mtu 10 1 tap0", "--mtu '10': expected a whole number from 68 to 65521" },
      { "--cidr 10.0.2.0/26 1 tap0", "prefix from 1 to 25" },
      { "--netns-type=fd 1 tap0", "--netns-type 'fd': expected pid or path" },
      { "-e 1 1 tap0", "--exit-fd '1': expected an inherited descriptor above 2" },
      { "abc tap0", "PID 'abc': expected a process id" },
      { "1 'tap0,netns=/x'", "TAPNAME 'tap0,netns=/x'" },
      { "1", "expected PID|PATH TAPNAME, got 1 arguments" },
      { "--mtu", "option --mtu needs a value" },
      { "--configure=1 1 tap0", "option --configure takes no value" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = run(c[1])
      assert.equals(2, code, c[1] .. ": " .. err)
      assert.equals("", out)
      assert.matches("^netbe: slirp4netns: [^\n]*\n$", err)
      assert.truthy(err:find(c[2], 1, true), c[1] .. ": expected '" .. c[2] .. "' in " .. err)
    end
  end)

  it("names a descriptor that is not open", function()
    local code, _, err = run("-r 9 --netns-type=path /nonexistent tap0")
    assert.equals(1, code)
    assert.truthy(err:find("descriptor 9 is not open", 1, true), err)
  end)
end)
