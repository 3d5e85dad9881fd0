#!/usr/bin/env python3
"""An upstream resolver for tests, on 127.0.0.1 only: every A question is
answered with 192.0.2.10 (TEST-NET-1), anything else with an empty answer.
Usage: dns-stub.py LOGFILE PORTFILE. Each question's name goes to LOGFILE."""
import socket
import struct
import sys

log_path, port_path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
with open(port_path + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os
os.rename(port_path + ".tmp", port_path)

while True:
    data, peer = s.recvfrom(512)
    if len(data) < 12:
        continue
    ident, flags, qd = struct.unpack("!HHH", data[:6])
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        labels.append(data[i + 1 : i + 1 + data[i]].decode("ascii", "replace"))
        i += 1 + data[i]
    qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
    question = data[12 : i + 5]
    with open(log_path, "a") as f:
        f.write(".".join(labels) + "\n")
    answers = b""
    count = 0
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes([192, 0, 2, 10])
        count = 1
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100), 1, count, 0, 0)
    s.sendto(header + question + answers, peer)
