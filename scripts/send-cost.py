#!/usr/bin/env python3
"""What a 200-byte send() over loopback TCP costs the sender, in system time, when the reading
process is busy (sends back to back) and when it sleeps between them (a gap between sends).
This is the floor under any server's cost per delivery on this machine (BENCHMARKS.md).

    scripts/send-cost.py            # gaps of 0, 200 us and 1 ms
    scripts/send-cost.py 0.0005     # one gap, in seconds
"""
import os
import resource
import socket
import sys
import time

N = 20000
SIZE = 200


def cost(gap):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pid = os.fork()
    if pid == 0:
        total = 0
        while total < N * SIZE:
            d = s.recv(65536)
            if not d:
                break
            total += len(d)
        os._exit(0)
    msg = b"x" * SIZE
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(N):
        c.send(msg)
        if gap:
            # Busy-wait: the sender never sleeps, so only the reader's wake-ups are measured.
            until = time.perf_counter() + gap
            while time.perf_counter() < until:
                pass
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    for sock in (c, s, srv):
        sock.close()
    return (r1.ru_stime - r0.ru_stime) / N * 1e6, (r1.ru_utime - r0.ru_utime) / N * 1e6


for gap in [float(a) for a in sys.argv[1:]] or [0.0, 0.0002, 0.001]:
    sys_us, user_us = cost(gap)
    print(f"gap {gap * 1e6:6.0f} us: {sys_us:5.2f} us system, {user_us:4.2f} us user per send")
