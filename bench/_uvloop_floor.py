"""The bare uvloop floor: a UDP server that answers Handle resolutions from a dictionary, only.

The issue's Python anchor ("a uvloop UDP server answering from an in-memory dict") made with
the same requests, answers and load generator as the node, so that one run says how close the
node's cached path comes to what any Python process on uvloop reaches on this machine at this
moment. Per request it does what the node's response cache does on a hit (the key, a dictionary
lookup, the request ids copied into the stored answer, one ``sendto``) and nothing else: no rate
limit, no counters, no store.

    python bench/_uvloop_floor.py --port P --handles hot-handles.txt [--processes 2]

Run by ``bench/id_resolution.py`` (``--processes N`` forks N servers on one SO_REUSEPORT port);
it builds its answers with the project's codec from the benchmark's own records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from id_resolution import record, resolution_request
from tiangong.identity.handle import codec
from tiangong.identity.node.response_cache import request_key
from tiangong.identity.store.base import public_answer


def answers(handles: list[str]) -> dict[bytes, bytes]:
    """Request key → encoded answer, for the requests the load generator sends."""
    table: dict[bytes, bytes] = {}
    for handle in handles:
        wanted = record(int(handle.rsplit("-", 1)[1]))
        body = public_answer(wanted.handle, wanted.values)
        assert body is not None
        request = resolution_request(handle, 1)
        key = request_key(request)
        assert key is not None
        table[key] = codec.encode_resolution_answer(request, body)
    return table


class Floor(asyncio.DatagramProtocol):
    def __init__(self, table: dict[bytes, bytes]) -> None:
        self.table = table
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        template = self.table.get(data[:4] + data[16:36] + data[40:])
        if template is not None and self.transport is not None:
            self.transport.sendto(template[:4] + data[4:12] + template[12:], addr)


async def serve(port: int, table: dict[bytes, bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Floor(table), sock=sock)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--handles", type=Path, required=True, help="one handle per line")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    table = answers(args.handles.read_text().split())
    children = []
    for _ in range(args.processes - 1):
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve(args.port, table))
            os._exit(0)
        children.append(pid)
    try:
        uvloop.run(serve(args.port, table))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
