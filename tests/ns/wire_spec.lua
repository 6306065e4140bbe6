-- `netbe wire` between real kernel stacks: taps in namespaces this spec
-- makes, joined directly and through the stream and dgram backends.
local ns = require("ns")

local skip = ns.skip_unless_root("socat", "ping", "sha256sum")

-- Start `netbe wire A B` in namespace N; returns pid, log. Socket paths
-- live in the tests' directories under /tmp.
local function wire(n, a, b, extra)
  return n:spawn(ns.netbe .. " wire " .. ns.quote(a) .. " " .. ns.quote(b) .. " --allow-files /tmp"
                 .. (extra or ""))
end

local function wait_link(n, ifname)
  assert(ns.wait_for(function() return (n:exec("ip link show " .. ifname)) end, 10),
         "interface " .. ifname .. " never appeared in " .. n.name)
end

-- Move tap IFNAME from namespace FROM into TO and give it ADDR.
local function plug(from, ifname, to, addr, mtu)
  wait_link(from, ifname)
  assert(ns.sh("ip -n " .. from.name .. " link set " .. ifname .. " netns " .. to.name))
  local ok, out = to:exec("ip addr add " .. addr .. " dev " .. ifname ..
    (mtu and (" && ip link set " .. ifname .. " mtu " .. mtu) or "") ..
    " && ip link set " .. ifname .. " up")
  assert(ok, out)
end

-- Copy SIZE random bytes over TCP from namespace A to B's ADDR; returns the
-- two sha256 sums.
local function tcp_copy(a, b, addr, size)
  local tmp = ns.tmpdir()
  assert(ns.sh("head -c " .. size .. " /dev/urandom >" .. tmp .. "/src"))
  b:spawn("socat -u TCP-LISTEN:5001,reuseaddr OPEN:" .. tmp .. "/dst,creat,trunc")
  assert(ns.wait_for(function()
    local _, out = b:exec("ss -ltn")
    return out:find(":5001", 1, true)
  end, 10), "the TCP sink never listened")
  local ok, out = a:exec("timeout 60 socat -u OPEN:" .. tmp .. "/src TCP:" .. addr .. ":5001")
  assert(ok, "socat sender: " .. out)
  ns.wait_for("test \"$(stat -c %s " .. tmp .. "/dst)\" = " .. size, 20)
  local _, s1 = ns.sh("sha256sum <" .. tmp .. "/src")
  local _, s2 = ns.sh("sha256sum <" .. tmp .. "/dst")
  return s1, s2
end

describe("netbe wire between namespaces #ns", function()
  teardown(ns.cleanup)
  if skip then pending(skip) return end

  it("joins two taps: ping, an 8 MiB TCP copy intact, counters on SIGINT", function()
    local h, a, b = ns.new("h"), ns.new("a"), ns.new("b")
    local ta, tb = ns.unique("tap"), ns.unique("tap")
    local pid, log = wire(h, ta, tb)
    plug(h, ta, a, "192.168.77.1/24"); plug(h, tb, b, "192.168.77.2/24")
    local ok, out = a:exec("ping -c 3 -i 0.2 -W 2 192.168.77.2")
    assert(ok, "ping failed: " .. out .. ns.read(log))
    local s1, s2 = tcp_copy(a, b, "192.168.77.2", 8 * 1024 * 1024)
    assert.equal(s1, s2)
    ns.kill(pid, "INT")
    local text = ns.read(log)
    assert.matches("stopped by SIGINT", text)
    -- With offloads on, the 8 MiB cross in TSO frames: count bytes.
    local bytes = tonumber(text:match(ta .. "%s+rx_frames=%d+ rx_bytes=(%d+)"))
    assert.is_true(bytes and bytes > 8 * 1024 * 1024, "tap counters missing: " .. text)
  end)

  it("carries 9000-byte frames with mtu=9000 on both taps", function()
    local h, a, b = ns.new("h"), ns.new("a"), ns.new("b")
    local ta, tb = ns.unique("tap"), ns.unique("tap")
    local _, log = wire(h, ta .. ",mtu=9000", tb .. ",mtu=9000")
    plug(h, ta, a, "192.168.78.1/24", 9000); plug(h, tb, b, "192.168.78.2/24", 9000)
    local ok, out = a:exec("ping -c 2 -i 0.2 -W 2 -M do -s 8972 192.168.78.2")
    assert(ok, "jumbo ping failed: " .. out .. ns.read(log))
    ok = a:exec("ping -c 1 -W 1 -M do -s 8973 192.168.78.2")
    assert.is_false(ok, "a frame over the MTU must not pass")
  end)

  for _, kind in ipairs({"stream", "dgram"}) do
    it("joins two netbe processes through the " .. kind .. " backend", function()
      local h, a, b = ns.new("h"), ns.new("a"), ns.new("b")
      local ta, tb = ns.unique("tap"), ns.unique("tap")
      local sock = ns.tmpdir() .. "/s"
      local left, right
      if kind == "stream" then
        left, right = "stream,listen=unix:" .. sock, "stream,connect=unix:" .. sock
      else
        left = "dgram,local=127.0.0.1:47001,remote=127.0.0.1:47002"
        right = "dgram,local=127.0.0.1:47002,remote=127.0.0.1:47001"
      end
      wire(h, ta, left)
      if kind == "stream" then assert(ns.wait_for("test -S " .. sock, 10)) end
      local _, log = wire(h, tb, right, " --stats 1")
      plug(h, ta, a, "192.168.79.1/24"); plug(h, tb, b, "192.168.79.2/24")
      local ok, out = a:exec("ping -c 3 -i 0.2 -W 2 192.168.79.2")
      assert(ok, kind .. " ping failed: " .. out .. ns.read(log))
      local s1, s2 = tcp_copy(a, b, "192.168.79.2", 2 * 1024 * 1024)
      assert.equal(s1, s2)
      -- The sender's TSO frames crossed as MTU-sized frames; the receiving
      -- side joined them again for its tap, which negotiated TSO.
      local frames, bytes
      assert.is_true(ns.wait_for(function()
        for line in ns.read(log):gmatch("[^\n]+") do
          local f, n = line:match("^" .. kind .. "%s+rx_frames=(%d+) rx_bytes=(%d+)")
          if f then frames, bytes = tonumber(f), tonumber(n) end
        end
        return bytes and bytes >= 2 * 1024 * 1024
      end, 5), "no counters for the " .. kind .. " side in " .. ns.read(log))
      assert.is_true(bytes / frames > 4000, "frames from the " .. kind .. " average " ..
                     bytes / frames .. " bytes")
    end)
  end

  it("a stream client reconnects when its server comes back", function()
    local h, a, b = ns.new("h"), ns.new("a"), ns.new("b")
    local ta, tb = ns.unique("tap"), ns.unique("tap")
    local sock = ns.tmpdir() .. "/s"
    local server = wire(h, ta, "stream,listen=unix:" .. sock)
    assert(ns.wait_for("test -S " .. sock, 10))
    wire(h, tb, "stream,connect=unix:" .. sock .. ",reconnect=1")
    plug(h, ta, a, "192.168.80.1/24"); plug(h, tb, b, "192.168.80.2/24")
    assert(a:exec("ping -c 2 -i 0.2 -W 2 192.168.80.2"))
    ns.kill(server, "INT")
    assert(ns.sh("rm -f " .. sock))
    local ta2 = ns.unique("tap")
    wire(a, ta2, "stream,listen=unix:" .. sock)
    wait_link(a, ta2)
    assert(a:exec("ip addr flush dev " .. ta .. "; ip link set " .. ta .. " down; " ..
                  "ip addr add 192.168.80.1/24 dev " .. ta2 .. " && ip link set " .. ta2 .. " up"))
    assert(b:exec("ip neigh flush all"))  -- the new tap has a new MAC
    assert.is_true(ns.wait_for(function()
      return (a:exec("ping -c 1 -W 1 192.168.80.2"))
    end, 15), "no traffic after the server came back")
  end)

  it("a stream client without reconnect ends with an error when its server goes", function()
    local h = ns.new("h")
    local sock = ns.tmpdir() .. "/s"
    local server = wire(h, "null", "stream,listen=unix:" .. sock)
    assert(ns.wait_for("test -S " .. sock, 10))
    local _, log = wire(h, "null", "stream,connect=unix:" .. sock)
    assert(ns.wait_for(function() return ns.read(log):find("until SIGINT", 1, true) end, 10))
    ns.kill(server, "INT")
    assert.is_true(ns.wait_for(function() return ns.read(log):find("went down", 1, true) end, 10),
                   "the client kept running: " .. ns.read(log))
    assert.matches("not connected", ns.read(log))
  end)

  it("ends with an error, not a busy loop, when its tap is deleted", function()
    local h = ns.new("h")
    local ta = ns.unique("tap")
    local pid, log = wire(h, ta, "null")
    wait_link(h, ta)
    assert(h:exec("ip link del " .. ta))
    assert.is_true(ns.wait_for(function() return not ns.alive(pid) end, 10),
                   "netbe wire kept running: " .. ns.read(log))
    assert.matches(ta .. " went down: File descriptor in bad state", ns.read(log))
    assert.matches(ta .. "%s+rx_frames=%d+ .* rx_errors=1 ", ns.read(log))
  end)

  it("rejects a bad spec with a message on stderr and a non-zero exit", function()
    local ok, out = ns.sh(ns.netbe .. " wire null 'stream,listen=unix:/nonexistent-dir/s'")
    assert.is_false(ok)
    assert.matches("nonexistent%-dir", out)
    ok, out = ns.sh(ns.netbe .. " wire null 'tap0,colour=blue'")
    assert.is_false(ok)
    assert.matches("colour", out)
    assert.matches("mac", out)
  end)
end)

-- A stream client whose server never answers a SYN (an nft rule in a
-- namespace drops it): connect() used to block the process about two
-- minutes per try. The loop must keep running other events, and the
-- client give up after its 10 s connect timeout.
local SYN_DROP = [[
package.cpath = arg[1] .. "/lua/?.so;" .. package.cpath
local netbe = require "netbe"
local b = netbe.open("stream,connect=127.0.0.1:9")
local ticks = 0
local reason = netbe.run{timeout = 20, every = 0.05, tick = function()
  ticks = ticks + 1
  if b:down() then return "down" end
end}
print(("ticks=%d reason=%s why=%s"):format(ticks, reason, tostring(b:down())))
]]

describe("stream connect= to a host that drops SYNs", function()
  local skip_nft = ns.skip_unless_root("nft")
  teardown(ns.cleanup)
  if skip_nft then pending(skip_nft) return end

  it("never blocks the event loop and goes down after the connect timeout", function()
    local n = ns.new("syn")
    local ok, out = n:exec("printf 'table inet netbe_test {\\n chain input {\\n" ..
                           "  type filter hook input priority 0;\\n  tcp dport 9 drop\\n }\\n}\\n' | nft -f -")
    assert(ok, out)
    local script = ns.write(ns.tmpdir() .. "/syn.lua", SYN_DROP)
    ok, out = n:exec("timeout 30 lua5.4 " .. script .. " " .. ns.quote(ns.root))
    assert.is_true(ok, "the client blocked: " .. out)
    local ticks, reason, why = out:match("ticks=(%d+) reason=(%S+) why=([^\n]*)")
    assert.equal("down", reason, out)
    assert.equal("Connection timed out", why)
    -- 50 ms ticks over the 10 s the connect waited: the loop never stopped.
    assert.is_true(tonumber(ticks) >= 150, out)
  end)
end)
