-- Backends through the Lua module: pair, null, stream, dgram, the API and wire.
local netbe = require "netbe"
local unique = require("ns").unique
-- UNIX socket paths need the files permission; these tests use /tmp.
local TMP = { allow_files = "/tmp" }

-- An Ethernet frame of LEN bytes whose payload encodes SEQ.
local function frame(len, seq)
  local head = "\255\255\255\255\255\255\2\0\0\0\0\1\8\0" .. string.pack(">I4", seq)
  return head .. string.rep(string.char(seq % 251), len - #head)
end

-- Receive one frame from BE, running the loop briefly while nothing waits.
local function recv_wait(be, tries)
  for _ = 1, tries or 50 do
    local f = be:recv()
    if f then return f end
    netbe.step(0.01)
  end
end

describe("pair", function()
  it("joins two endpoints opened with the same name, both ways", function()
    local name = unique("p")
    local a = netbe.open("pair,name=" .. name)
    local b = netbe.open("pair,name=" .. name)
    assert.equal(64, a:send(frame(64, 1)))
    assert.equal(frame(64, 1), b:recv())
    assert.equal(1514, b:send(frame(1514, 2)))
    assert.equal(frame(1514, 2), a:recv())
    assert.is_nil(a:recv())
    local s = a:stats()
    assert.same({ 1, 64, 1, 1514 }, { s.tx_frames, s.tx_bytes, s.rx_frames, s.rx_bytes })
    a:close(); b:close()
  end)

  it("peek reports the next length and discard drops it", function()
    local name = unique("p")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    a:send(frame(100, 1)); a:send(frame(200, 2))
    assert.equal(100, b:peek())
    assert.equal(100, b:peek())
    assert.equal(100, b:discard())
    assert.equal(frame(200, 2), b:recv())
    assert.equal(0, b:peek())
    assert.equal(1, b:stats().rx_drops)
    a:close(); b:close()
  end)

  it("refuses runt frames and counts them", function()
    local name = unique("p")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    local ok, msg = a:send("short")
    assert.is_nil(ok)
    assert.equal("Invalid argument", msg)
    assert.equal(1, a:stats().tx_drops)
    a:close(); b:close()
  end)

  it("calls back on receive only while enabled", function()
    local name = unique("p")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    local got = {}
    b:on(function(ev)
      local f = b:recv()
      while f do got[#got + 1] = f; f = b:recv() end
    end)
    a:send(frame(60, 1)); a:send(frame(60, 2))
    netbe.step(0.05)
    assert.equal(2, #got)
    b:on(nil)
    a:send(frame(60, 3))
    netbe.step(0.05)
    assert.equal(2, #got)
    a:close(); b:close()
  end)

  it("joins the next two opens after a first end closed alone, leaking no descriptor", function()
    local self_fd = "/proc/" .. io.open("/proc/self/stat"):read("n") .. "/fd"
    local function fds()
      local p = io.popen("ls " .. self_fd)
      local n = select(2, p:read("a"):gsub("\n", ""))
      p:close()
      return n
    end
    local name = unique("p")
    local before = fds()
    netbe.open("pair,name=" .. name):close()
    assert.equal(before, fds())
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    assert.equal(60, a:send(frame(60, 1)))
    assert.equal(frame(60, 1), recv_wait(b))
    assert.equal(61, b:send(frame(61, 2)))
    assert.equal(frame(61, 2), recv_wait(a))
    a:close(); b:close()
    assert.equal(before, fds())
  end)

  it("goes down when the other end closes, instead of calling back for ever", function()
    local name = unique("p")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    local calls, down = 0, false
    a:on(function(ev) calls = calls + 1; down = down or ev == "down"; a:recv() end)
    b:close()
    netbe.step(0.1)
    assert.is_true(calls <= 2, calls .. " callbacks")
    assert.is_true(down, "no down event")
    assert.equal("Transport endpoint is not connected", a:down())
    a:close()
  end)

  it("raises a callback's error from run", function()
    local name = unique("p")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    b:on(function() error("policy bug") end)
    a:send(frame(60, 1))
    assert.has_error(function() netbe.step(0.05) end)
    b:on(nil); a:close(); b:close()
  end)
end)

describe("virtio-net header conversion", function()
  local function pair()
    local name = unique("h")
    return netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
  end

  it("prepends and strips a header when the two sides differ", function()
    local a, b = pair()
    assert.is_true(a:set_cap(0, 12))
    assert.equal(12, a:hdr_len())
    local hdr = string.rep("\0", 12)
    -- a's frontend sends header + frame; pair carries plain frames.
    assert.equal(12 + 60, a:send(hdr .. frame(60, 5)))
    assert.equal(frame(60, 5), b:recv())
    b:send(frame(70, 6))
    local got = a:recv()
    assert.equal(12 + 70, #got)
    -- num_buffers (bytes 11..12) is 1 for a 12-byte header.
    assert.equal(string.rep("\0", 10) .. "\1\0", got:sub(1, 12))
    assert.equal(frame(70, 6), got:sub(13))
    a:close(); b:close()
  end)

  it("rejects header lengths other than 0, 10, 12 and receive offloads a pair lacks", function()
    local a, b = pair()
    assert.is_nil(a:set_cap(0, 11))
    assert.is_nil(a:set_cap(netbe.F_GUEST_TSO4, 12))
    assert.is_nil(a:set_cap(netbe.F_CSUM, 0))
    -- Sending offloads are done in software for any backend.
    local send = netbe.F_CSUM | netbe.F_HOST_TSO4 | netbe.F_HOST_TSO6 | netbe.F_HOST_ECN
                 | netbe.F_HOST_UFO | netbe.F_HOST_USO
    assert.equal(send, a:get_cap())
    assert.is_true(a:set_cap(send, 12))
    assert.equal(send, a:features())
    a:close(); b:close()
  end)

  it("keeps the bits a frontend negotiates that are not offloads (bhyve passes them all)", function()
    local a, b = pair()
    -- MAC, STATUS, MRG_RXBUF, CTRL_VQ, NOTIFY_ON_EMPTY, INDIRECT_DESC
    local others = (1 << 5) | (1 << 16) | netbe.F_MRG_RXBUF | (1 << 17) | (1 << 24) | (1 << 28)
    assert.is_true(a:set_cap(netbe.F_CSUM | others, 12))
    assert.equal(netbe.F_CSUM | others, a:features())
    assert.is_true(a:set_cap(others, 0))
    assert.is_nil(a:set_cap(netbe.F_GUEST_TSO4 | others, 12))
    assert.equal(others, a:features())
    a:close(); b:close()
  end)

  it("drops a frame whose header puts the checksum inside the Ethernet header", function()
    local a, b = pair()
    a:set_cap(0, 10)
    local needs_csum = "\1\0" .. string.rep("\0", 8)
    local ok = a:send(needs_csum .. frame(60, 1))
    assert.is_nil(ok)
    assert.is_nil(b:recv())
    assert.equal(1, a:stats().tx_drops)
    assert.equal(1, a:stats().tx_bad_hdr)
    a:close(); b:close()
  end)

  it("refuses a 200 KB checksum frame from Lua before copying it, and goes on", function()
    local a, b = pair()
    a:set_cap(netbe.F_CSUM, 12)
    -- NEEDS_CSUM, csum_start 34, csum_offset 16: true for any frame this long.
    local needs_csum = "\1\0\0\0\0\0\34\0\16\0\0\0"
    local ok, msg, errno = a:send(needs_csum .. frame(200 * 1024, 1))
    assert.is_nil(ok)
    assert.equal(90, errno)                          -- EMSGSIZE
    assert.is_truthy(msg:find("too long", 1, true))
    assert.equal(1, a:stats().tx_drops)
    assert.equal(12 + netbe.MAX_FRAME, a:send(needs_csum .. frame(netbe.MAX_FRAME, 2)))
    assert.equal(netbe.MAX_FRAME, #recv_wait(b))
    a:close(); b:close()
  end)
end)

describe("null", function()
  it("takes and counts everything, receives nothing", function()
    local n = netbe.open("null")
    assert.equal(60, n:send(frame(60, 1)))
    assert.equal(1, n:stats().tx_frames)
    assert.is_nil(n:recv())
    assert.equal("null", n:type())
    n:close()
  end)
end)

describe("stream", function()
  it("carries frames both ways over TCP loopback, client to listener", function()
    local port = 20000 + math.random(0, 19999)
    local s = netbe.open("stream,listen=127.0.0.1:" .. port)
    local c = netbe.open("stream,connect=127.0.0.1:" .. port)
    netbe.step(0.05)
    for i = 1, 20 do assert.equal(1000 + i, c:send(frame(1000 + i, i))) end
    for i = 1, 20 do assert.equal(frame(1000 + i, i), recv_wait(s)) end
    assert.equal(9014, s:send(frame(9014, 99)))
    assert.equal(frame(9014, 99), recv_wait(c))
    c:close(); s:close()
  end)

  it("fails to connect with the reason, unless reconnect is set", function()
    local path = "/tmp/netbe-nobody-" .. unique("s")
    assert.has_error(function() netbe.open("stream,connect=unix:" .. path, TMP) end,
      "stream: cannot connect to unix:" .. path .. ": No such file or directory")
    local c = netbe.open("stream,connect=unix:" .. path .. ",reconnect=1", TMP)
    assert.is_nil(c:send(frame(60, 1)))
    assert.equal(1, c:stats().tx_drops)
    c:close()
  end)

  it("says why listening failed", function()
    assert.has_error(function() netbe.open("stream,listen=unix:/nonexistent-dir/x.sock", { allow_files = "/" }) end,
      "stream: cannot listen on unix:/nonexistent-dir/x.sock: No such file or directory")
  end)
end)

describe("dgram", function()
  it("carries one frame per UDP datagram", function()
    local p1 = 40000 + math.random(0, 9998)
    local a = netbe.open(("dgram,local=127.0.0.1:%d,remote=127.0.0.1:%d"):format(p1, p1 + 1))
    local b = netbe.open(("dgram,local=127.0.0.1:%d,remote=127.0.0.1:%d"):format(p1 + 1, p1))
    assert.equal(1514, a:send(frame(1514, 1)))
    assert.equal(frame(1514, 1), recv_wait(b))
    assert.equal(60, b:send(frame(60, 2)))
    assert.equal(frame(60, 2), recv_wait(a))
    a:close(); b:close()
  end)

  it("carries frames over UNIX datagram sockets and removes its socket", function()
    local p1, p2 = "/tmp/netbe-dg-" .. unique("a"), "/tmp/netbe-dg-" .. unique("b")
    local a = netbe.open(("dgram,local=unix:%s,remote=unix:%s"):format(p1, p2), TMP)
    local b = netbe.open(("dgram,local=unix:%s,remote=unix:%s"):format(p2, p1), TMP)
    assert.equal(9000, b:send(frame(9000, 3)))
    assert.equal(frame(9000, 3), recv_wait(a))
    a:close(); b:close()
    assert.is_nil(io.open(p1))
  end)
end)

describe("dgram over UNIX sockets, peers coming and going", function()
  it("sends once a peer that was absent at open binds, and again after it comes back", function()
    local p1, p2 = "/tmp/netbe-dg-" .. unique("a"), "/tmp/netbe-dg-" .. unique("b")
    local spec_a = ("dgram,local=unix:%s,remote=unix:%s"):format(p1, p2)
    local spec_b = ("dgram,local=unix:%s,remote=unix:%s"):format(p2, p1)
    local a = netbe.open(spec_a, TMP)
    assert.is_nil(a:send(frame(60, 1)))
    assert.equal(1, a:stats().tx_drops)
    local b = netbe.open(spec_b, TMP)
    assert.equal(61, a:send(frame(61, 2)))
    assert.equal(frame(61, 2), recv_wait(b))
    assert.equal(62, b:send(frame(62, 3)))
    assert.equal(frame(62, 3), recv_wait(a))
    b:close()
    assert.is_nil(a:send(frame(63, 4)))
    assert.equal(2, a:stats().tx_drops)
    b = netbe.open(spec_b, TMP)
    assert.equal(64, a:send(frame(64, 5)))
    assert.equal(frame(64, 5), recv_wait(b))
    a:close(); b:close()
  end)
end)

describe("wire", function()
  it("moves frames both ways between two pairs", function()
    local n1, n2 = unique("w"), unique("w")
    local guest1, a = netbe.open("pair,name=" .. n1), netbe.open("pair,name=" .. n1)
    local b, guest2 = netbe.open("pair,name=" .. n2), netbe.open("pair,name=" .. n2)
    local w = netbe.wire(a, b)
    guest1:send(frame(100, 1))
    guest2:send(frame(200, 2))
    assert.equal(frame(100, 1), recv_wait(guest2))
    assert.equal(frame(200, 2), recv_wait(guest1))
    assert.has_error(function() netbe.wire(a, guest1) end)
    w:close(); guest1:close(); a:close(); b:close(); guest2:close()
  end)

  it("holds back instead of dropping when the far side is full, in order", function()
    local n1, n2 = unique("f"), unique("f")
    local src, a = netbe.open("pair,name=" .. n1), netbe.open("pair,name=" .. n1)
    local b, sink = netbe.open("pair,name=" .. n2), netbe.open("pair,name=" .. n2)
    local w = netbe.wire(a, b)
    -- Far more than the socket buffers hold: the sink is not reading.
    local sent, seq = 0, 0
    for _ = 1, 400 do
      for _ = 1, 50 do
        if not src:send(frame(9000, seq + 1)) then break end
        seq = seq + 1
      end
      netbe.step(0)
    end
    sent = seq
    assert.is_true(sent > 200, "only " .. sent .. " frames went in")
    -- Drain: every frame arrives, in order, none dropped.
    local got = 0
    for _ = 1, 2000 do
      local f = sink:recv()
      if f then
        got = got + 1
        assert.equal(got, string.unpack(">I4", f, 15))
      else
        if got == sent then break end
        netbe.step(0.005)
      end
    end
    assert.equal(sent, got)
    assert.equal(0, w:drops())
    assert.equal(0, b:stats().tx_drops)
    w:close(); src:close(); a:close(); b:close(); sink:close()
  end)
end)
