#!/usr/bin/env python3
"""tcpxfer.py: a TCP transfer whose data can be checked at both ends.

  tcpxfer.py recv ADDR PORT      accept one connection, print "LEN SHA256"
  tcpxfer.py send ADDR PORT LEN [SECONDS]
                                 send LEN pseudo-random bytes, print "LEN SHA256";
                                 with SECONDS, spread them evenly over that time
"""
import hashlib, random, socket, sys, time

def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    h, total = hashlib.sha256(), 0
    if mode == "recv":
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port))
        ls.listen(1)
        c, _ = ls.accept()
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            h.update(b)
            total += len(b)
    else:
        size = left = int(sys.argv[4])
        pace = float(sys.argv[5]) if len(sys.argv) > 5 else 0
        # Paced, smaller pieces keep the rate even.
        piece = 1 << 16 if pace else 1 << 18
        rnd = random.Random(4)
        s = socket.create_connection((addr, port), timeout=60)
        start = time.monotonic()
        while left > 0:
            b = rnd.randbytes(min(left, piece))
            s.sendall(b)
            h.update(b)
            total += len(b)
            left -= len(b)
            if pace:
                time.sleep(max(0, start + pace * total / size - time.monotonic()))
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        s.close()
    print(total, h.hexdigest(), flush=True)

main()
