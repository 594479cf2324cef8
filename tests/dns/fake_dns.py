"""A fake DNS server for the sandbox's lookup test: on 127.0.0.1:53 (inside the test's own
network namespace), it writes every name asked for to a log, one per line, and answers A
queries for names under `allowed.example` with 203.0.113.7; everything else is NXDOMAIN."""
import socket
import sys

log_path = sys.argv[1]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
with open(log_path, "a", buffering=1) as log:
    log.write("ready\n")
    while True:
        query, peer = sock.recvfrom(512)
        labels, at = [], 12
        while query[at]:
            n = query[at]
            labels.append(query[at + 1 : at + 1 + n].decode("ascii", "replace"))
            at += 1 + n
        question = query[12 : at + 5]
        qtype = int.from_bytes(query[at + 1 : at + 3], "big")
        name = ".".join(labels).lower()
        log.write(name + "\n")
        known = name.endswith(".allowed.example")
        answer = b""
        if known and qtype == 1:
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 7])
        flags = b"\x81\x80" if known else b"\x81\x83"
        header = query[:2] + flags + b"\x00\x01" + (b"\x00\x01" if answer else b"\x00\x00") + b"\x00\x00\x00\x00"
        sock.sendto(header + question + answer, peer)
