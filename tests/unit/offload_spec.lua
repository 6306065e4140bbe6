-- offload_spec.lua (unit): the Lua face of software offloads: netbe.offload,
-- netbe.frame_check, offload negotiation in netbe.wire, and bad input.
local netbe = require("netbe")
local unique = require("ns").unique

-- A 12-byte virtio-net header.
local function hdr(flags, gso, hdr_len, gso_size, cstart, coff)
  return string.pack("<BBI2I2I2I2I2", flags, gso, hdr_len, gso_size, cstart, coff, 0)
end

-- An Ethernet + IPv4 + UDP frame with PAYLOAD bytes.
local function udp_frame(payload)
  local data = string.rep("x", payload)
  local ip = string.pack(">BBI2I2I2BBI2", 0x45, 0, 28 + payload, 1, 0x4000, 64, 17, 0)
             .. "\10\0\0\1\10\0\0\2"
  local udp = string.pack(">I2I2I2I2", 1234, 9, 8 + payload, 0)
  return "\2\0\0\0\0\2\2\0\0\0\0\1\8\0" .. ip .. udp .. data
end

-- Ones'-complement sum of S, folded.
local function sum(s)
  local t = 0
  if #s % 2 == 1 then s = s .. "\0" end
  for i = 1, #s, 2 do t = t + (s:byte(i) << 8 | s:byte(i + 1)) end
  while t > 0xffff do t = (t & 0xffff) + (t >> 16) end
  return t
end

describe("netbe.offload", function()
  it("completes a partial UDP checksum", function()
    local f = udp_frame(101)
    -- The partial checksum: pseudo header sum, as a driver leaves it.
    local ps = sum("\10\0\0\1\10\0\0\2\0\17" .. string.pack(">I2", 8 + 101))
    f = f:sub(1, 40) .. string.pack(">I2", ps) .. f:sub(43)
    local out = assert(netbe.offload(hdr(1, 0, 0, 0, 34, 6) .. f, 12))
    assert.equal(1, #out)
    local g = out[1]
    local pseudo = "\10\0\0\1\10\0\0\2\0\17" .. string.pack(">I2", 8 + 101)
    assert.equal(0xffff, sum(pseudo .. g:sub(35)))
  end)

  it("cuts a USO frame into datagrams", function()
    local out = assert(netbe.offload(hdr(1, 5, 42, 500, 34, 6) .. udp_frame(1700), 12))
    assert.equal(4, #out)
    assert.equal(42 + 500, #out[1])
    assert.equal(42 + 200, #out[4])
  end)

  it("refuses lying headers with a message, and bad header lengths with an error", function()
    local ok, msg = netbe.offload(hdr(1, 0, 0, 0, 200, 6) .. udp_frame(10), 12)
    assert.is_nil(ok)
    assert.matches("header does not match", msg)
    assert.is_nil((netbe.frame_check(hdr(1, 5, 42, 0, 34, 6) .. udp_frame(100), 12)))
    assert.is_true(netbe.frame_check(hdr(1, 5, 42, 50, 34, 6) .. udp_frame(100), 12))
    assert.has_error(function() netbe.offload("x", 11) end,
                     "netbe.offload: header length 11 (expected 10 or 12)")
    assert.has_error(function() netbe.frame_check("x", 0) end,
                     "netbe.frame_check: header length 0 (expected 10 or 12)")
    assert.is_nil((netbe.frame_check("short", 12)))
  end)

  it("is done by a pair for a frontend that negotiated checksum offload", function()
    local name = unique("o")
    local a, b = netbe.open("pair,name=" .. name), netbe.open("pair,name=" .. name)
    assert.is_true(a:set_cap(netbe.F_CSUM | netbe.F_HOST_USO, 12))
    local f = hdr(1, 5, 42, 500, 34, 6) .. udp_frame(1200)
    assert.equal(#f, a:send(f))
    local n = 0
    while b:recv() do n = n + 1 end
    assert.equal(3, n)
    local s = a:stats()
    assert.equal(1, s.tx_sw_frames)
    assert.equal(3, s.tx_frames)
    a:close(); b:close()
  end)
end)

describe("netbe.wire offload negotiation", function()
  it("leaves two pairs without offloads and checks its options", function()
    local n1, n2 = unique("w"), unique("w")
    local a, a2 = netbe.open("pair,name=" .. n1), netbe.open("pair,name=" .. n1)
    local b, b2 = netbe.open("pair,name=" .. n2), netbe.open("pair,name=" .. n2)
    assert.has_error(function() netbe.wire(a, b, { offload = "yes" }) end,
                     "netbe.wire: option offload: expected a boolean, got string")
    local w = netbe.wire(a, b)
    -- Neither pair delivers offloaded frames: nothing to gain, plain frames.
    assert.equal(0, a:features())
    assert.equal(0, a:hdr_len())
    w:close()
    w = netbe.wire(a, b, { offload = false })
    assert.equal(0, b:features())
    w:close()
    a:close(); a2:close(); b:close(); b2:close()
  end)
end)
