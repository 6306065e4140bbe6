-- `netbe slirp4netns`, run the way rootlesskit runs slirp4netns: against a
-- network namespace the test made, by path or by the PID of a process in
-- it. The slirp4netns process itself runs in a host namespace of the
-- test's own that has only a loopback (no route off the machine); "the
-- host's loopback" the guest reaches through 10.0.2.2 is that namespace's.
local ns = require("ns")

local skip = ns.skip_unless_root("nsenter", "unshare", "python3")

-- An HTTP-less echo: answers "hello" to each connection on 127.0.0.1:PORT.
local SERVE = [[python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"hello\n"); c.close()']]
-- Connects to ADDR PORT and prints what comes back, or the error.
local ASK = [[python3 -c 'import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(c.recv(100).decode().strip())
except OSError as e:
    print("error", e)']]

local function s4(args)
  return ns.quote(ns.netbe) .. " slirp4netns " .. args
end

describe("netbe slirp4netns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  -- A host namespace H (the slirp side) and a guest namespace G.
  local function pair()
    return ns.new("sfh"), ns.new("sfg")
  end

  local function wait_addr(g, addr)
    return ns.wait_for(function()
      local _, out = g:exec("ip -4 -o addr show dev tap0")
      return out:find(addr, 1, true) ~= nil
    end, 10)
  end

  it("configures 10.0.2.100 in a namespace given by path and reaches the host's loopback via 10.0.2.2", function()
    local h, g = pair()
    local pid, log = h:spawn("exec " .. s4("--configure --netns-type=path /run/netns/" .. g.name .. " tap0"))
    assert.is_true(wait_addr(g, "10.0.2.100/24"), ns.read(log))
    local _, route = g:exec("ip route show default")
    assert.matches("default via 10.0.2.2 dev tap0", route)
    local _, link = g:exec("ip -o link show tap0")
    assert.matches("mtu 1500", link)
    h:spawn(SERVE .. " 127.0.0.1 8080")
    assert.is_true(ns.wait_for(function() return (h:exec("ss -ltn | grep -q 127.0.0.1:8080")) end))
    local _, out = g:exec(ASK .. " 10.0.2.2 8080")
    assert.equals("hello", out:gsub("%s+$", ""))
    assert.is_true(ns.alive(pid))
  end)

  it("takes a PID, --mtu and --cidr as slirp4netns does", function()
    local h = ns.new("sfh")
    local target = ns.spawn("exec unshare --net sleep 600")
    assert.is_true(ns.wait_for(function()
      local _, a = ns.sh("readlink /proc/" .. target .. "/ns/net")
      local _, b = ns.sh("readlink /proc/self/ns/net")
      return a ~= "" and a ~= b
    end))
    local _, log = h:spawn("exec " .. s4("-c -m 9000 --cidr 10.0.3.0/24 " .. target .. " tap0"))
    local enter = "nsenter --net=/proc/" .. target .. "/ns/net "
    assert.is_true(ns.wait_for(function()
      local _, out = ns.sh(enter .. "ip -4 -o addr show dev tap0")
      return out:find("10.0.3.100/24", 1, true) ~= nil
    end, 10), ns.read(log))
    local _, link = ns.sh(enter .. "ip -o link show tap0")
    assert.matches("mtu 9000", link)
    local _, route = ns.sh(enter .. "ip route show default")
    assert.matches("default via 10.0.3.2 dev tap0", route)
  end)

  it("keeps the host's loopback out of reach with --disable-host-loopback", function()
    local h, g = pair()
    local _, log = h:spawn("exec " .. s4("-c --disable-host-loopback --netns-type=path /run/netns/"
                                         .. g.name .. " tap0"))
    assert.is_true(wait_addr(g, "10.0.2.100/24"), ns.read(log))
    h:spawn(SERVE .. " 127.0.0.1 8080")
    assert.is_true(ns.wait_for(function() return (h:exec("ss -ltn | grep -q 127.0.0.1:8080")) end))
    local _, out = g:exec(ASK .. " 10.0.2.2 8080")
    assert.matches("^error", out)
    -- slirp itself still answers at the gateway address.
    assert.is_true((g:exec("ping -c 1 -W 3 10.0.2.2")))
  end)

  it("writes 1 to the ready fd and closes it once configured, and exits when the exit fd closes", function()
    local h, g = pair()
    local dir = ns.tmpdir()
    assert.is_true((ns.sh("mkfifo " .. dir .. "/ready " .. dir .. "/exit")))
    -- The exit pipe's only writer; killing it closes the pipe.
    local writer = ns.spawn("exec sleep 600 >" .. dir .. "/exit")
    local pid, log = h:spawn("exec " .. s4("--configure -r 3 --exit-fd=4 --netns-type=path /run/netns/"
                                           .. g.name .. " tap0") .. " 3>" .. dir .. "/ready 4<"
                             .. dir .. "/exit")
    -- cat ends only at end of file: the ready fd was written and closed.
    local ok, ready = ns.sh("timeout 15 cat " .. dir .. "/ready")
    assert.is_true(ok, ready .. ns.read(log))
    assert.equals("1", ready)
    local _, addr = g:exec("ip -4 -o addr show dev tap0")
    assert.matches("10.0.2.100/24", addr)
    assert.is_true(ns.alive(pid))
    ns.kill(writer)
    assert.is_true(ns.wait_for(function() return not ns.alive(pid) end, 5), ns.read(log))
    assert.matches("exit%-fd 4 is readable or closed", ns.read(log))
    assert.matches("slirp4netns: stopped by done", ns.read(log))
  end)

  it("fails, naming the problem, for a namespace that is not one", function()
    local ok, out = ns.sh(s4("--netns-type=path /etc/hostname tap0"))
    assert.is_false(ok)
    assert.matches("not one", out)
  end)

  it("publishes a port with add_hostfwd on the API socket", function()
    local h, g = pair()
    local dir = ns.tmpdir()
    local sock = dir .. "/api.sock"
    local _, log = h:spawn("exec " .. s4("-c -a " .. sock .. " --netns-type=path /run/netns/"
                                         .. g.name .. " tap0"))
    assert.is_true(wait_addr(g, "10.0.2.100/24"), ns.read(log))
    assert.is_true(ns.wait_for("test -S " .. sock))
    g:spawn(SERVE .. " 10.0.2.100 80")
    assert.is_true(ns.wait_for(function() return (g:exec("ss -ltn | grep -q 10.0.2.100:80")) end))
    local req = [[{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8081, "guest_port": 80}}]]
    local ok, ans = ns.sh("printf '%s\\n' " .. ns.quote(req) .. " | socat - UNIX-CONNECT:" .. sock)
    assert.is_true(ok, ans)
    local id = ans:match('"return"%s*:%s*{%s*"id"%s*:%s*(%d+)')
    assert.is_truthy(id, ans)
    local _, out = h:exec(ASK .. " 127.0.0.1 8081")
    assert.equals("hello", out:gsub("%s+$", ""))
    local _, list = ns.sh("printf '%s\\n' '{\"execute\": \"list_hostfwd\"}' | socat - UNIX-CONNECT:" .. sock)
    assert.matches('"id"%s*:%s*' .. id, list)
  end)
end)
