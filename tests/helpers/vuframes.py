#!/usr/bin/env python3
"""vuframes.py: frames with known contents sent into a vhost-user device's
backend and read back after a driver forwarded them (testpmd in io mode).

  vuframes.py stream PATH COUNT SIZES
      connect to the device's backend stream,listen=unix:PATH
  vuframes.py packet IFNAME COUNT SIZES FLOWS
      send IPv4/UDP frames of FLOWS flows out of tap IFNAME (the device's
      backend, in this namespace) and take them back as they come in

SIZES is a comma-separated list of frame lengths, used in turn; frames
longer than VUFRAMES_EXPECT_MAX (in the environment) are sent but must
not come back (the driver's buffers cannot take them whole). At most
WINDOW frames are out at a time, so nothing is lost to a full queue. Every
frame carries its sequence number and a pattern made from it; one that
comes back must be the frame sent, byte for byte. Prints "sent N
expected N back N intact N missing N unexpected N" and exits 0 when
every frame expected came back intact and no other did, 1 otherwise
(after 10 s without progress).
"""
import os, socket, struct, sys, threading, time

MAGIC = b"NBVU"
WINDOW = 32
DST, SRC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")


def ip_csum(h):
    s = sum(struct.unpack("!10H", h))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def payload(seq, n):
    body = MAGIC + struct.pack("!I", seq)
    return body + bytes((seq * 31 + i) & 0xff for i in range(max(0, n - len(body))))


def frame(seq, size, flows):
    if flows == 0:                       # plain Ethernet, a local ethertype
        return DST + SRC + b"\x88\xb5" + payload(seq, size - 14)
    flow = seq % flows
    udp_len = size - 34
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size - 14, seq & 0xffff, 0, 64, 17, 0,
                     bytes([10, 9, 0, 1]), bytes([10, 9, flow >> 8, 2 + flow % 250]))
    ip = ip[:10] + struct.pack("!H", ip_csum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", 1024 + flow, 2048, udp_len, 0)
    return DST + SRC + b"\x08\x00" + ip + udp + payload(seq, udp_len - 8)


def seq_of(f, flows):
    off = 14 if flows == 0 else 42
    if f[off:off + 4] != MAGIC:
        return None
    return struct.unpack("!I", f[off + 4:off + 8])[0]


def run(send, recv, count, sizes, flows):
    sent, not_expected = {}, set()
    back = intact = unexpected = 0
    bad = []
    done = threading.Condition()
    state = {"last": time.monotonic()}

    def reader():
        nonlocal back, intact, unexpected
        while True:
            f = recv()
            if f is None:
                return
            seq = seq_of(f, flows)
            if seq in not_expected:
                unexpected += 1
                if len(bad) < 3:
                    bad.append("frame %d came back as %d bytes" % (seq, len(f)))
            if seq is None or seq not in sent:
                continue
            with done:
                back += 1
                if f == sent.pop(seq):
                    intact += 1
                elif len(bad) < 3:
                    bad.append("frame %d: %d bytes came back changed" % (seq, len(f)))
                state["last"] = time.monotonic()
                done.notify_all()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    expect_max = int(os.environ.get("VUFRAMES_EXPECT_MAX", "1000000"))
    expected = count
    for seq in range(count):
        f = frame(seq, sizes[seq % len(sizes)], flows)
        if len(f) > expect_max:
            expected -= 1
            not_expected.add(seq)
            send(f)
            continue
        with done:
            while len(sent) >= WINDOW and time.monotonic() - state["last"] < 10:
                done.wait(0.5)
            if len(sent) >= WINDOW:
                break
            sent[seq] = f
            state["last"] = time.monotonic()
        send(f)
    with done:
        while sent and time.monotonic() - state["last"] < 10:
            done.wait(0.5)
        missing = expected - back
    print("sent %d expected %d back %d intact %d missing %d unexpected %d" %
          (count, expected, back, intact, missing, unexpected))
    for line in bad:
        print(line)
    return 0 if intact == expected and unexpected == 0 else 1


def main():
    mode = sys.argv[1]
    if mode == "stream":
        path, count, sizes = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        lock = threading.Lock()

        def read_exact(n):
            b = b""
            while len(b) < n:
                chunk = s.recv(n - len(b))
                if not chunk:
                    return None
                b += chunk
            return b

        def recv():
            h = read_exact(4)
            return h and read_exact(struct.unpack("!I", h)[0])

        def send(f):
            with lock:
                s.sendall(struct.pack("!I", len(f)) + f)

        flows = 0
    else:
        ifname, count, sizes, flows = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.bind((ifname, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)

        def recv():
            while True:
                f, addr = s.recvfrom(1 << 17)
                if addr[2] != socket.PACKET_OUTGOING:
                    return f

        send = s.send
    sizes = [int(x) for x in sizes.split(",")]
    sys.exit(run(send, recv, count, sizes, flows))


if __name__ == "__main__":
    main()
