#!/usr/bin/env python3
"""tcpxfer.py: a TCP transfer whose data can be checked at both ends.

  tcpxfer.py recv ADDR PORT      accept one connection, print "LEN SHA256"
  tcpxfer.py send ADDR PORT LEN  send LEN pseudo-random bytes, print "LEN SHA256"
"""
import hashlib, random, socket, sys

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
        left = int(sys.argv[4])
        rnd = random.Random(4)
        s = socket.create_connection((addr, port), timeout=60)
        while left > 0:
            b = rnd.randbytes(min(left, 1 << 18))
            s.sendall(b)
            h.update(b)
            total += len(b)
            left -= len(b)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        s.close()
    print(total, h.hexdigest(), flush=True)

main()
