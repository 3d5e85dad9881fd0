"""Reads stdin to its end in reads of at most CHUNK bytes, sleeping PAUSE
seconds after each (a slow terminal or pipe), and prints what it got:
`BYTES LINES SHA256`.

    python3 slow-reader.py CHUNK PAUSE
"""
import hashlib
import sys
import time

chunk = int(sys.argv[1])
pause = float(sys.argv[2])
digest = hashlib.sha256()
total = 0
lines = 0
stdin = sys.stdin.buffer
while True:
    block = stdin.read1(chunk)
    if not block:
        break
    digest.update(block)
    total += len(block)
    lines += block.count(b"\n")
    if pause > 0:
        time.sleep(pause)
print(total, lines, digest.hexdigest())
