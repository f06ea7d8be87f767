#!/usr/bin/python3
"""TEST helper: print the TCP payload of every packet to PORT seen on any interface for SECONDS.

The fleet scenario runs it on a Docker host to read the requests a load balancer sends to a backend
(plain HTTP on the fleet network) exactly as the backend receives them: what headers reached it.
Needs CAP_NET_RAW (the test containers have it). Usage: request-capture.py PORT SECONDS
"""

import socket
import struct
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
sniffer.settimeout(0.2)
print("capturing", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        frame = sniffer.recv(65535)
    except socket.timeout:
        continue
    if frame[12:14] != b"\x08\x00":
        continue
    packet = frame[14:]
    header = (packet[0] & 0x0F) * 4
    if packet[9] != 6:
        continue
    segment = packet[header:]
    if struct.unpack("!H", segment[2:4])[0] != port:
        continue
    payload = segment[(segment[12] >> 4) * 4:]
    if payload:
        sys.stdout.write(payload.decode("latin-1"))
        sys.stdout.flush()
