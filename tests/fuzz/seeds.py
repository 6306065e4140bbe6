#!/usr/bin/env python3
"""Writes the hand-made seeds (seed-*) of the libFuzzer corpora in
tests/fuzz/corpus/NAME/: valid frames of every kind the offload code
knows, rings, stream records, configs, policies, and the inputs that showed
bugs since fixed (the *_fixed functions: each names its bug). The input
formats are the ones the harnesses read (see each tests/fuzz/NAME.c and
fuzz.h). Crashes found by fuzzing are kept next to them under their own
names.
Usage: tests/fuzz/seeds.py  (rewrites every seed-* file)"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

GUEST = bytes.fromhex("525400123456")
GW = bytes.fromhex("525400000002")


def csum(data, s=0):
    if len(data) % 2:
        data += b"\0"
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def ipv4(proto, payload, src="10.0.2.15", dst="10.0.2.2", ident=0x1234, frag=0x4000):
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag,
                               64, proto, 0, bytes(map(int, src.split("."))),
                               bytes(map(int, dst.split(".")))))
    struct.pack_into("!H", ip, 10, ~csum(bytes(ip)) & 0xffff)
    return bytes(ip) + payload


def ipv6(proto, payload):
    src = bytes.fromhex("fec00000000000000000000000000f15")
    dst = bytes.fromhex("fec00000000000000000000000000002")
    return struct.pack("!IHBB", 0x60000000, len(payload), proto, 64) + src + dst + payload


def pseudo(ip, v6, proto, l4len):
    if v6:
        return csum(ip[8:40] + struct.pack("!IxxxB", l4len, proto))
    return csum(ip[12:20] + struct.pack("!xBH", proto, l4len))


def tcp(payload, flags=0x18, seq=1000, sport=40000, dport=22):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 0x50, flags, 65535, 0, 0) + payload


def udp(payload, sport=40000, dport=53):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def eth(ethertype, l3, vlans=0, dst=GW, src=GUEST):
    tags = b"".join(struct.pack("!HH", 0x8100, 10 + i) for i in range(vlans))
    return dst + src + tags + struct.pack("!H", ethertype) + l3


def l4_frame(v6, proto, l4, vlans=0, partial=True):
    """An Ethernet frame; with PARTIAL the L4 checksum field holds the
    pseudo header's sum, as a driver leaves it for NEEDS_CSUM."""
    ip = ipv6(proto, l4) if v6 else ipv4(proto, l4)
    f = bytearray(eth(0x86dd if v6 else 0x0800, ip, vlans))
    l3 = 14 + 4 * vlans
    l4off = l3 + (40 if v6 else 20)
    if partial:
        field = l4off + (16 if proto == 6 else 6)
        struct.pack_into("!H", f, field, pseudo(bytes(f[l3:]), v6, proto, len(l4)))
    return bytes(f), l4off


def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, cstart=0, coff=0, hl=12):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, cstart, coff, 0)[:hl]


def gso_frame(kind, payload_len, mss, vlans=0, hl=12):
    """A virtio header and frame asking for TSO4, TSO6, USO or UFO."""
    v6 = kind in ("tso6", "uso6")
    proto = 17 if kind in ("uso4", "uso6", "ufo") else 6
    body = bytes((i * 7) & 0xff for i in range(payload_len))
    l4 = tcp(body) if proto == 6 else udp(body)
    f, l4off = l4_frame(v6, proto, l4, vlans)
    gso = {"tso4": 1, "tso6": 4, "uso4": 5, "uso6": 5, "ufo": 3}[kind]
    hdrs = l4off + (20 if proto == 6 else 8)
    h = vnet(1, gso, hdrs, mss, l4off, 16 if proto == 6 else 6, hl)
    return h + f


def csum_frame(v6=False, proto=6, n=100, hl=12):
    body = bytes(range(n % 256)) * (n // 256 + 1)
    l4 = tcp(body[:n]) if proto == 6 else udp(body[:n])
    f, l4off = l4_frame(v6, proto, l4)
    return vnet(1, 0, 0, 0, l4off, 16 if proto == 6 else 6, hl) + f


def write(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for sname, data in seeds.items():
        with open(os.path.join(d, "seed-" + sname), "wb") as fh:
            fh.write(data)


# ---- The byte formats of fuzz.h ----

def fz_frame(data, length=None, take=None):
    """fz_len, then the count of bytes given, then the bytes."""
    length = len(data) if length is None else length
    take = len(data) if take is None else take
    if length < 2048:
        head = struct.pack("<BH", 0, length)
    else:
        head = struct.pack("<BH", 0x80 | (length >> 16), length & 0xffff)
    return head + struct.pack("<H", take) + data[:take]


def fz_split(pieces):
    """Cut into len(PIECES) + 1 iovecs: the pieces' lengths, then the rest."""
    return bytes([len(pieces)]) + b"".join(struct.pack("<H", p) for p in pieces)


HDR_INDEX = {0: 0, 10: 1, 12: 2}
NETBE_MAX_FRAME = 65535 + 14 + 4
OFFERED = 0x80000000 | 0x1ffff


def features(bits):
    return struct.pack("<I", bits)


# ---- send ----

def send_seeds():
    s = {}

    def prog(pair, hl, ops, feat=OFFERED):
        return bytes([pair, HDR_INDEX[hl]]) + features(feat) + ops

    def checked(data, pieces=()):
        return b"\x02" + fz_frame(data) + fz_split(pieces)

    for kind, n, mss in (("tso4", 3000, 1000), ("tso6", 2000, 700), ("uso4", 1500, 500),
                         ("uso6", 1000, 333), ("ufo", 3000, 1480)):
        s[kind] = prog(1, 12, checked(gso_frame(kind, n, mss), (7, 40)))
    s["tso4-vlan2"] = prog(1, 12, checked(gso_frame("tso4", 4000, 1448, vlans=2)))
    s["tso4-hdr10"] = prog(1, 10, checked(gso_frame("tso4", 5000, 1448, hl=10)))
    s["csum-tcp"] = prog(1, 12, checked(csum_frame()))
    s["csum-udp6"] = prog(1, 10, checked(csum_frame(True, 17, 300, hl=10)))
    s["plain"] = prog(1, 0, checked(l4_frame(False, 17, udp(b"x" * 50), partial=False)[0]))
    big = gso_frame("tso4", 60000, 1448)
    s["tso4-64k"] = prog(1, 12, b"\x02" + fz_frame(big, take=80) + fz_split(()))
    s["tso4-mss1"] = prog(1, 12, b"\x02" + fz_frame(gso_frame("tso4", 1000, 1), take=80) +
                          fz_split(()))
    s["null-tso"] = prog(0, 12, b"\x00" + fz_frame(gso_frame("tso4", 3000, 1000)) +
                         fz_split(()) + b"\x03\x05\x01" + features(0) + b"\x00" +
                         fz_frame(gso_frame("tso4", 3000, 1000, hl=10)) + fz_split(()))
    s["backpressure"] = prog(1, 12, (b"\x00" + fz_frame(gso_frame("tso4", 60000, 88),
                                                        take=80) + fz_split(())) * 20 +
                             b"\x03\x04" * 4)
    return s


def send_fixed():
    """An offload frame longer than NETBE_MAX_FRAME plus its header overflowed
    the software offload's buffer (issue 12)."""
    f = csum_frame()
    return {"tx_bound-overflow": bytes([1, 2]) + features(OFFERED) + b"\x00" +
            fz_frame(f, length=100000) + fz_split(())}


# ---- recv ----

def recv_seeds():
    s = {}

    def caps(tx_hl, rx_hl, rx_feat=OFFERED):
        return (bytes([HDR_INDEX[tx_hl]]) + features(OFFERED) + bytes([HDR_INDEX[rx_hl]]) +
                features(rx_feat))

    def send(data, pieces=()):
        return b"\x00" + fz_frame(data) + fz_split(pieces)

    def recv(room, pieces=()):
        return b"\x02" + struct.pack("<BH", 0x80 | (room >> 16), room & 0xffff) + \
            fz_split(pieces)

    def merge(sizes):
        return b"\x05\x00" + bytes([len(sizes) - 1]) + \
            b"".join(struct.pack("<H", n) for n in sizes)

    tso = gso_frame("tso4", 3000, 1000)
    s["tso-merge"] = caps(12, 12) + send(tso) + recv(65600, (12, 30)) + \
        merge((12, 100, 1000, 4000)) + recv(65600) + b"\x03" + recv(100) + b"\x03\x04"
    s["plain-hdr10"] = caps(0, 10, 0) + send(l4_frame(False, 6, tcp(b"y" * 80))[0]) + \
        b"\x03" + recv(65600, (5, 5, 5))
    s["rx-events"] = caps(12, 0, 0) + send(csum_frame()) + b"\x07\x01" + recv(2000) + \
        b"\x07\x00"
    s["offload"] = b"".join(b"\x06\x01" + fz_frame(gso_frame(k, 3000, 1000))
                            for k in ("tso4", "tso6", "uso4", "ufo"))
    s["renegotiate"] = caps(12, 12) + send(tso) + b"\x03\x08" + caps(10, 0, 0) + \
        recv(65600)
    return s


def recv_fixed():
    """A plain frame over the bound crossed the pair and came out (issue 12)."""
    f = l4_frame(False, 17, udp(b"x" * 64), partial=False)[0]
    return {"tx_bound-rx": bytes([0]) + features(0) + bytes([0]) + features(0) +
            b"\x00" + fz_frame(f, length=70000) + fz_split(()) +
            b"\x02" + struct.pack("<BH", 0x81, 0xffff) + fz_split(())}


# ---- virtq ----

def vq_setup(size_log2, event_idx=False, indirect=False):
    return bytes([(1 if event_idx else 0) | (2 if indirect else 0), size_log2])


def vq_desc(i, addr, length, flags=0, nxt=0, table=None):
    """Op 0: descriptor I of the ring's table, or of TABLE."""
    out = b"\x00" + struct.pack("<H", i)
    out += b"\x01" + struct.pack("<I", table) if table is not None else b"\x00"
    out += struct.pack("<I", addr) + b"\x00"
    out += b"\x80" + struct.pack("<I", length) if length > 0xffff else \
        b"\x00" + struct.pack("<H", length)
    return out + struct.pack("<BH", flags, nxt)


def vq_offer(head, used_event=0, no_interrupt=False):
    return b"\x02" + struct.pack("<HB", head, 1 if no_interrupt else 0) + \
        struct.pack("<H", used_event)


def vq_write(gpa, data):
    out = b""
    for off in range(0, len(data), 255):
        piece = data[off:off + 255]
        out += b"\x03" + struct.pack("<IB", gpa + off, len(piece)) + piece
    return out


def vq_pop(allow, push=True, iovmax=64):
    return b"\x04" + struct.pack("<BHB", allow - 1, iovmax - 1, 1 if push else 0)


NEXT, WRITE, INDIRECT = 1, 2, 4
PUBLISH, NOTIFY_ON, PENDING = b"\x08", b"\x09\x01", b"\x0a"


def virtq_seeds():
    s = {}
    frame = gso_frame("tso4", 3000, 1000)
    s["tx-tso"] = (vq_setup(3) + vq_write(0x10000, frame[:120]) +
                   vq_desc(0, 0x10000, 60, NEXT, 1) + vq_desc(1, 0x10000 + 60, len(frame) - 60) +
                   vq_offer(0) + vq_pop(1) + PUBLISH + NOTIFY_ON + PENDING)
    s["rx-chain"] = (vq_setup(4, event_idx=True) + vq_desc(3, 0x20000, 12, WRITE | NEXT, 5) +
                     vq_desc(5, 0x30000, 1500, WRITE) + vq_offer(3, used_event=0) +
                     vq_pop(2) + PUBLISH + vq_offer(3) + vq_pop(3) + b"\x06" + vq_pop(3) +
                     PUBLISH)
    s["indirect"] = (vq_setup(3, indirect=True) + vq_desc(0, 0x40000, 48, INDIRECT) +
                     vq_desc(0, 0x10000, 100, NEXT, 1, table=0x40000) +
                     vq_desc(1, 0x11000, 100, NEXT, 2, table=0x40000) +
                     vq_desc(2, 0x12000, 1000, WRITE, table=0x40000) +
                     vq_offer(0) + vq_pop(3) + PUBLISH)
    s["wrap"] = (vq_setup(1) + vq_desc(0, 0x10000, 64) +
                 (vq_offer(0) + vq_pop(1) + PUBLISH) * 5 + b"\x0b\xfe\xff" +
                 vq_offer(0) + vq_pop(1) + b"\x0c" + vq_setup(1))
    return s


def virtq_fixed():
    """A 200 KB transmit chain whose header asks for a checksum overflowed the
    software offload's buffer (issue 12)."""
    head = csum_frame()[:60]
    return {"tx_bound-200k": vq_setup(3) + vq_write(0x10000, head) +
            vq_desc(0, 0x10000, 200000) + vq_offer(0) + vq_pop(1)}


# ---- stream ----

def stream_record(data, length=None, cut=0):
    return b"\x00" + fz_frame(data, length) + struct.pack("<H", cut)


def stream_recv(room=None, pieces=()):
    if room is None:
        return b"\x04\x01" + fz_split(pieces)
    return b"\x04\x00" + struct.pack("<BH", 0x80 | (room >> 16), room & 0xffff) + \
        fz_split(pieces)


def stream_tcp(a=0, b=1, mss=None, cut=0):
    """op_tcp: A (connection, IPv6 4, PSH 8, bad checksum 0x80) and B (TCP
    options 1: timestamps); MSS on a connection's first segment."""
    return b"\x09" + bytes([a, b]) + (struct.pack("<H", mss) if mss else b"") + \
        struct.pack("<H", cut)


def stream_seeds():
    s = {}
    arp = eth(0x0806, bytes(28), dst=b"\xff" * 6)
    tso = gso_frame("tso4", 3000, 1000)[12:]

    def prog(listen, hl, ops, feat=OFFERED):
        return bytes([listen, HDR_INDEX[hl]]) + features(feat) + ops

    s["connect-frames"] = prog(0, 0, stream_record(arp) + stream_record(tso, cut=2) +
                               stream_recv() + stream_recv(100) + stream_recv())
    s["listen-hdr12"] = prog(1, 12, stream_record(arp, cut=30) + b"\x07\x00" +
                             stream_recv(pieces=(3, 9)) + b"\x06" + stream_record(tso) +
                             b"\x07\x01" + b"\x08")
    s["big-record"] = prog(0, 10, stream_record(tso, length=NETBE_MAX_FRAME) + stream_recv())
    s["out-of-step"] = prog(1, 0, stream_record(arp) + b"\x03" +
                            struct.pack(">I", NETBE_MAX_FRAME + 1) + stream_record(arp) +
                            stream_recv())
    s["raw-bytes"] = prog(0, 0, b"\x02\x06\x00\x00\x00\x01\xaa\x00" + stream_recv() +
                          b"\x08")
    # In-order segments that join into TSO frames, and ones that do not.
    s["tcp-join4"] = prog(0, 12, stream_tcp(mss=1447) + stream_tcp() * 4 + stream_tcp(cut=700) +
                          stream_recv() + b"\x07\x00" + stream_recv() + stream_recv())
    s["tcp-join6"] = prog(1, 10, stream_tcp(4, mss=1439) + stream_tcp(4) + stream_tcp(4 | 8) +
                          stream_tcp(1, mss=99) + stream_tcp(4) + stream_tcp(4 | 0x80) +
                          stream_tcp(4) + stream_tcp(4) + b"\x07\x01" + stream_recv() * 6)
    return s


def stream_fixed():
    """An empty record held back the frame behind it (issue 12)."""
    arp = eth(0x0806, bytes(28), dst=b"\xff" * 6)
    return {"stream_empty-stall": bytes([0, 0]) + features(0) + stream_record(arp) +
            stream_record(b"") + stream_record(arp) + stream_recv()}


# ---- slirp ----

BCAST = b"\xff" * 6


def arp_request(target="10.0.2.2"):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + GUEST + bytes([10, 0, 2, 15]) + \
        bytes(6) + bytes(map(int, target.split(".")))
    return eth(0x0806, body, dst=BCAST)


def dhcp_discover():
    bootp = bytearray(300)
    bootp[0:3] = b"\x01\x01\x06"
    bootp[4:8] = b"\x12\x34\x56\x78"
    bootp[28:34] = GUEST
    bootp[236:240] = b"\x63\x82\x53\x63"
    bootp[240:244] = bytes([53, 1, 1, 255])
    u = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bytes(bootp)
    return eth(0x0800, ipv4(17, u, "0.0.0.0", "255.255.255.255"), dst=BCAST)


def icmp_echo(dst="10.0.2.2"):
    body = bytearray(struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping" * 8)
    struct.pack_into("!H", body, 2, ~csum(bytes(body)) & 0xffff)
    return eth(0x0800, ipv4(1, bytes(body), dst=dst))


def l4_full(v6, proto, l4, dst="10.0.2.2"):
    """A frame with a complete L4 checksum."""
    ip = ipv6(proto, l4) if v6 else ipv4(proto, l4, dst=dst)
    field = (16 if proto == 6 else 6) + (40 if v6 else 20)
    c = ~csum(ip[40 if v6 else 20:], pseudo(ip, v6, proto, len(l4))) & 0xffff
    ip = ip[:field] + struct.pack("!H", c) + ip[field + 2:]
    return eth(0x86dd if v6 else 0x0800, ip)


def tcp_syn(dst="10.0.2.2", dport=22, v6=False):
    return l4_full(v6, 6, tcp(b"", flags=0x02, dport=dport), dst)


def dns_query():
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + \
        struct.pack("!HH", 1, 1)
    return l4_full(False, 17, udp(q, dport=53), "10.0.2.3")


def icmp6(type_, body):
    src = bytes.fromhex("fe800000000000005054 00fffe123456".replace(" ", ""))
    dst = bytes.fromhex("ff020000000000000000000000000002")
    msg = bytearray(struct.pack("!BBH", type_, 0, 0) + body)
    ph = src + dst + struct.pack("!IxxxB", len(msg), 58)
    struct.pack_into("!H", msg, 2, ~csum(ph + bytes(msg)) & 0xffff)
    ip = struct.pack("!IHBB", 0x60000000, len(msg), 58, 255) + src + dst + bytes(msg)
    return eth(0x86dd, ip, dst=bytes.fromhex("333300000002"))


def slirp_seeds():
    s = {}

    def guest(f, pieces=()):
        return b"\x00" + fz_frame(f) + fz_split(pieces)

    def prog(opt, hl, ops, feat=OFFERED):
        """The guest first announces itself, so slirp knows where to answer."""
        return bytes([opt, HDR_INDEX[hl]]) + features(feat) + \
            guest(vnet(hl=hl) + arp_request()) + ops

    def direct(f):
        return b"\x02" + fz_frame(f) + fz_split(())

    run = b"\x03\x07"
    s["arp-dhcp"] = prog(0, 0, guest(arp_request()) + guest(dhcp_discover()) + run)
    s["ping-dns"] = prog(1, 12, guest(vnet() + icmp_echo()) + guest(vnet() + dns_query()) +
                         run)
    s["tcp-syn"] = prog(2, 0, guest(tcp_syn()) + run + guest(tcp_syn("10.0.2.2", 80)) + run)
    s["tcp-out"] = prog(2 | 4 * 3, 0, guest(tcp_syn("192.0.2.1", 443)) + run)
    s["ipv6"] = prog(0, 10, guest(vnet(hl=10) + icmp6(133, bytes(4))) +
                     guest(vnet(hl=10) + tcp_syn(v6=True)) + run)
    s["tso-guest"] = prog(2, 12, guest(gso_frame("tso4", 4000, 1000)) + run)
    s["tso-direct"] = prog(2, 12, direct(gso_frame("tso4", 4000, 1000)) + run)
    s["no-offload"] = prog(0x20, 0, direct(arp_request()) + run)

    def answer(window=65535, extra=0, data=b""):
        body = (b"\x80" + struct.pack("<H", len(data)) + data) if data else b"\x00"
        return b"\x06" + struct.pack("<HB", window, extra) + body

    connect, close = b"\x05\x00", b"\x05\x02"

    def write(n):
        return b"\x05\x40" + struct.pack("<H", n // 2)

    s["ipv6-fragments"] = prog(0, 0, b"".join(guest(ipv6_fragment(o))
                                              for o in (0x0001, 0x0008, 0xfff8)) + run)
    s["host-data"] = prog(0, 12, connect + run + answer() + run + write(65536) + run +
                          (answer() + run) * 6 + close + run + answer(extra=1) + run)
    s["host-window"] = prog(2, 0, connect + run + answer(window=1000) + write(20000) + run +
                            answer(window=0) + run + answer(data=b"hello") + run +
                            answer(extra=4) + run)
    return s


def ipv6_fragment(offset_mf):
    """An IPv6 fragment of a UDP datagram (libslirp drops them)."""
    src = bytes.fromhex("fec00000000000000000000000000f15")
    dst = bytes.fromhex("fec00000000000000000000000000002")
    frag = struct.pack("!BBHI", 17, 0, offset_mf, 0x1234) + udp(b"y" * 40)
    return eth(0x86dd, struct.pack("!IHBB", 0x60000000, len(frag), 44, 64) + src + dst + frag)


def slirp_fixed():
    """A lone last IPv4 fragment at offset 8 crashed libslirp (issue 12)."""
    frag = eth(0x0800, ipv4(17, udp(b"x" * 32), frag=0x0001))
    return {"ipv4_frag-lone": bytes([0, 0]) + features(0) + b"\x00" + fz_frame(frag) +
            fz_split(()) + b"\x03\x07"}


# ---- config ----

# Flags byte of config.c: open it, files allowed in %D, exec allowed.
OPEN, FILES_IN, FILES_ANY, FILES_NOT_DIR, EXEC = 1, 1 << 1, 2 << 1, 3 << 1, 1 << 3


def config_seeds():
    specs = {
        "tap": "tap0,mac=00:a0:98:12:34:56,mtu=9000",
        "null": "null",
        "pair": "pair,name=fz",
        "stream": "stream,connect=unix:%D/x,reconnect=5",
        "stream-tcp": "stream,listen=127.0.0.1:5000",
        "stream-live": "stream,connect=unix:%D/live",
        "stream-self": "stream,listen=unix:%D/self/s",
        "stream-stale": "stream,listen=%D/stale",
        "dgram": "dgram,local=[::1]:5000,remote=[::1]:5001",
        "dgram-unix": "dgram,local=unix:%D/l,remote=unix:%D/sub/r",
        "netgraph": "netgraph,path=bnet0:,peerhook=link2,socket=vm0",
        "netmap": "netmap:em0-1",
        "vale": "vale0:1",
        "slirp": "slirp,hostfwd=tcp::2222-:22;udp:127.0.0.1:5353-10.0.2.15:53,open",
        "slirp-net": "slirp,net=192.168.76.0/24,host=192.168.76.2,dhcpstart=192.168.76.9,"
                     "dns=192.168.76.3,dnssearch=lab;example.com,domainname=example.com,"
                     "hostname=vm1",
        "slirp-ipv6": "slirp,ipv6=on,ipv6-net=fd00::/64,ipv6-host=fd00::2,ipv6-dns=fd00::3",
        "slirp-tftp": "slirp,tftp=%D/sub,tftp-server-name=tftp,bootfile=pxelinux.0,restrict=on",
        "slirp-unix": "slirp,hostfwd=unix:%D/s-:22;unix:%D/sub/t-10.0.2.15:22,mtu=65520",
        "slirp-rules": "slirp,hostfwd=unix:%D/a-:22\0unix:%D/b-:23\0-unix:%D/a\0"
                       "tcp::2222-:22\0-tcp::2222",
        "type": "x,type=null,mac=02:00:00:00:00:01",
    }
    s = {k: bytes([OPEN | FILES_IN]) + v.encode() for k, v in specs.items()}
    s["slirp-guestfwd"] = bytes([OPEN | FILES_IN | EXEC]) + \
        b"slirp,guestfwd=tcp:10.0.2.100:8080-cmd:true"
    return s


def config_permissions():
    """Paths outside the allowed directory, through '..' or a link, and what
    needs a permission not given: each must be refused (of "runtime", the
    rules added later), touching nothing."""
    refused = {
        "outside": "stream,listen=unix:%O/x",
        "dotdot": "stream,listen=unix:%D/../out/x",
        "dotdot-sub": "slirp,hostfwd=unix:%D/sub/../../out/x-:22",
        "relative": "stream,listen=unix:x",
        "leaf-dotdot": "dgram,local=unix:%D/sub/..,remote=unix:%D/r",
        "link-dir": "slirp,hostfwd=unix:%D/up/x-:22",
        "link-live": "stream,connect=unix:%D/out-live",
        "link-stale": "slirp,hostfwd=unix:%D/out-stale-:22",
        "link-victim": "stream,listen=unix:%D/out-victim",
        "dangling": "dgram,local=unix:%D/dangling,remote=unix:%D/r",
        "out-live": "stream,connect=%O/live",
        "out-stale": "slirp,hostfwd=unix:%O/stale-:22",
        "tftp-outside": "slirp,tftp=%D/up",
        "tftp-dotdot": "slirp,tftp=%D/../out",
        "guestfwd-no-exec": "slirp,guestfwd=tcp:10.0.2.100:8080-cmd:true",
        "runtime": "slirp,hostfwd=unix:%D/a-:22\0unix:%O/b-:22\0unix:%D/up/c-:22\0"
                   "unix:%D/../out/d-:22\0unix:%D/out-stale-:22\0-unix:%D/a",
    }
    s = {"perm-" + k: bytes([OPEN | FILES_IN]) + v.encode()
         for k, v in refused.items()}
    # One rule at run time: a ';' is part of its path, not a separator.
    s["runtime-semicolon"] = bytes([OPEN | FILES_IN]) + \
        b"slirp,hostfwd=unix:%D/a-:22\0unix:%D/up;c-:22\0-unix:%D/up;c"
    s["perm-no-files"] = bytes([OPEN]) + b"stream,listen=unix:%D/x"
    s["perm-no-files-tftp"] = bytes([OPEN | EXEC]) + b"slirp,tftp=%D"
    s["perm-not-dir"] = bytes([OPEN | FILES_NOT_DIR]) + b"slirp,hostfwd=unix:%D/x-:22"
    s["perm-any"] = bytes([OPEN | FILES_ANY | EXEC]) + \
        b"slirp,hostfwd=unix:%O/x-:22,tftp=/,guestfwd=tcp:10.0.2.100:8080-cmd:true"
    return s


def config_fixed():
    """netbe removed a file and another service's socket it did not make, and
    took MACs with signs and spaces (issue 13)."""
    return {"unlink-victim": bytes([OPEN | FILES_IN]) + b"slirp,hostfwd=unix:%D/victim-:22",
            "unlink-live": bytes([OPEN | FILES_IN]) + b"slirp,hostfwd=unix:%D/live-:22",
            "mac_strict-plus": b"\x00tap0,mac=+2:+a:00:00:00:01",
            "mac_strict-space": b"\x00tap0,mac= 2: a:00:00:00:01"}


# ---- policy ----

def policy_rule(name=0, match=0, action=0, hook=None, chunkname=None, dir_=0, ethertype=0,
                proto=0, dport=(0, 0), rate=(0, 0), unit=0, extra=b"", ips=None):
    """One rule in policy.c's read_rule order."""
    kind = name | (0x20 if hook is not None and action != 4 else 0)
    out = bytes([kind]) + struct.pack("<H", match) + bytes([dir_]) + bytes(6)
    if match & (1 << 2):
        out += bytes(12)
    out += struct.pack("<HH", ethertype, 0xffff) + bytes([0])
    if match & ((1 << 5) | (1 << 6)):
        out += ips or bytes(32)
    out += bytes([24, 24, proto]) + struct.pack("<HHHH", 0, 65535, *dport)
    out += bytes([0, 0, 0]) + struct.pack("<H", 0) + b"\x00" + struct.pack("<H", 65535)
    out += bytes([action, unit])
    for v in rate:
        out += b"\x00" + struct.pack("<I", v)
    if hook is not None:
        out += bytes([len(hook)]) + hook
        out += (b"\x01" + bytes([len(chunkname)]) + chunkname) if chunkname else b"\x00"
    return out + extra


def policy_frame(dir_, f, dt=1000000):
    return bytes([dir_]) + struct.pack("<I", dt) + fz_frame(f)


def policy_head(n, budget=0):
    """Rule count, verdicts, budget; memory and time left to the defaults."""
    return bytes([n, 0, 1]) + struct.pack("<I", budget) + b"\x00\x00"


def policy_frames():
    return (policy_frame(1, tcp_syn()) + policy_frame(0, arp_request()) +
            policy_frame(1, dns_query()) + policy_frame(0, icmp_echo()))


def policy_seeds():
    s = {}
    M_DIR, M_ETH, M_PROTO, M_DPORT, M_SRC_IP = 1, 8, 128, 512, 32
    frames = policy_frames()
    head = policy_head
    s["ports"] = head(3) + policy_rule(0, M_PROTO | M_DPORT, 0, proto=6, dport=(22, 22)) + \
        policy_rule(1, M_ETH, 1, ethertype=0x0806) + policy_rule(2, M_DIR, 2, dir_=1) + frames
    s["rate"] = head(1) + policy_rule(0, M_PROTO, 3, proto=17, rate=(1000, 10), unit=1) + \
        frames * 3
    s["hook"] = head(2, 5000) + \
        policy_rule(0, M_DIR, 4, b"return function(pkt) if pkt.dport == 22 then "
                    b"return 'drop' end end", dir_=1) + \
        policy_rule(1, 0, 4, b"local n = 2054 return function(pkt) "
                    b"return pkt:u16(12) == n and 'pass' or nil end", b"@vm0.lua") + frames
    s["hook-state"] = head(1) + \
        policy_rule(0, 0, 4, b"local seen = {} return function(pkt) local k = pkt.src_ip "
                    b"or '' seen[k] = (seen[k] or 0) + 1 if seen[k] > 2 then return 'drop' "
                    b"end end") + frames * 2
    s["hook-fails"] = head(3) + policy_rule(0, 0, 4, b"return 5") + \
        policy_rule(1, 0, 4, b"error('at build')", b"=x") + \
        policy_rule(2, 0, 4, b"return function(pkt) return pkt.nothing.x end") + frames
    s["ip"] = head(1) + policy_rule(0, M_SRC_IP, 1, ips=bytes([10, 0, 2, 15]) + bytes(28)) + \
        frames
    # Hooks with no loop and no call run without the count hook; a jump
    # back or a call puts it back.
    s["hook-straight"] = head(3, 100) + \
        policy_rule(0, 0, 4, b"return function(pkt) local v = 'dr' .. 'op' "
                    b"if pkt['dp' .. 'ort'] == 22 then return v end end") + \
        policy_rule(1, 0, 4, b"local s = ('x'):rep(1 << 19) return function(pkt) "
                    b"local a = s .. s .. s if #a > 0 and pkt.len < 60 then "
                    b"return 'pass' end end") + \
        policy_rule(2, 0, 4, b"return function(pkt) ::top:: goto top end") + frames
    return s


def policy_fixed():
    """Hooks whose library calls ran unbounded in C (the budget counted each
    as one instruction), in the hook and in its chunk, which runs when the
    policy is built; a bytecode chunk; a chunk name with control characters
    in a build error's message (issue 13)."""
    hang = {"rep": b"string.rep('', math.maxinteger)",
            "match": b"(('a'):rep(40)):match(('a*'):rep(40) .. 'b')",
            "move": b"table.move({}, 1, math.maxinteger - 1, 2)",
            "format": b"string.format('%99d', 1):rep(1 << 40)"}
    s = {}
    for k, v in hang.items():
        s["sandbox-" + k] = policy_head(1) + \
            policy_rule(0, 0, 4, b"return function() return " + v + b" end") + \
            policy_frame(1, tcp_syn())
        s["sandbox-chunk-" + k] = policy_head(1) + \
            policy_rule(0, 0, 4, b"local x = " + v + b" return function() end")
    s["sandbox-bytecode"] = policy_head(1) + \
        policy_rule(0, 0, 4, b"\x1bLua\x54\x00\x19\x93\r\n\x1a\n\x04\x08\x08")
    s["chunkname-lines"] = policy_head(1) + \
        policy_rule(0, 0, 4, b"error('x')", b"@a\nb\r.lua\x1b[2J")
    return s


def main():
    write("send", {**send_seeds(), **send_fixed()})
    write("recv", {**recv_seeds(), **recv_fixed()})
    write("virtq", {**virtq_seeds(), **virtq_fixed()})
    write("stream", {**stream_seeds(), **stream_fixed()})
    write("slirp", {**slirp_seeds(), **slirp_fixed()})
    write("config", {**config_seeds(), **config_permissions(), **config_fixed()})
    write("policy", {**policy_seeds(), **policy_fixed()})


if __name__ == "__main__":
    main()
