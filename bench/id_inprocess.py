"""Identifier node, in process: what one UDP request costs the node's own Python.

No sockets and no load generator: requests are handed to the node's UDP protocol handler
(``_UdpProtocol.datagram_received``) with a transport that only keeps what is sent, so the
figures are the node's work alone, per request, on one core:

- **cache hit**: a repeated resolution answered from the response cache;
- **encoded miss**: a miss answered from the store's encoded answer (the default path);
- **full miss**: the same misses through decode, record, value objects and encode (the path
  before encoded answers, still taken by filtered or authenticated requests).

It loads ``--records`` of ``bench/id_resolution.py``'s device identifiers into a fresh embedded
store (or reuses one with ``--store``) and prints p50 / p99 / mean in µs for each.

    .venv/bin/python bench/id_inprocess.py                      # 100,000 records, ~1 min
    .venv/bin/python bench/id_inprocess.py --store /tmp/idb/node/handles.sqlite3 --records 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table

from id_resolution import PREFIX, handle_name, load_store, resolution_request
from tiangong.identity.handle import codec
from tiangong.identity.handle.protocol import ENVELOPE_SIZE
from tiangong.identity.node.server import NodeServer, _UdpProtocol
from tiangong.identity.node.service import HandleNode, NodeRole
from tiangong.identity.store import open_store

console = Console()
PEER = ("127.0.0.1", 40000)


class _Kept:
    """A transport that keeps the last datagram sent (and counts them)."""

    def __init__(self) -> None:
        self.sent = 0
        self.last = b""

    def sendto(self, data: bytes, _addr: object) -> None:
        self.sent += 1
        self.last = data


def timed(handle: Callable[[bytes], None], requests: list[bytes]) -> dict[str, float]:
    """µs per call of ``handle`` for each request: p50, p99, mean."""
    took: list[float] = []
    clock = time.perf_counter
    for request in requests:
        start = clock()
        handle(request)
        took.append(clock() - start)
    took.sort()
    return {
        "p50_us": round(took[len(took) // 2] * 1e6, 2),
        "p99_us": round(took[int(len(took) * 0.99)] * 1e6, 2),
        "mean_us": round(statistics.fmean(took) * 1e6, 2),
    }


async def measure(store_path: Path, records: int, count: int) -> dict[str, Any]:
    rng = random.Random(5)
    async with open_store(store_path) as store:
        node = HandleNode(store, role=NodeRole.ENTERPRISE)
        await node.refresh_homed()
        server = NodeServer(node, port=0)
        protocol = _UdpProtocol(server)
        transport = _Kept()
        protocol.connection_made(transport)  # type: ignore[arg-type]

        def udp(request: bytes) -> None:
            protocol.datagram_received(request, PEER)

        def full(request: bytes) -> None:
            message = codec.decode_message(request)
            answer = server.dispatcher.answer_now(message, request[ENVELOPE_SIZE:])
            assert answer is not None
            codec.encode_message(answer)

        def draws() -> list[bytes]:
            return [
                resolution_request(handle_name(rng.randrange(records)), i) for i in range(count)
            ]

        hot = [resolution_request(handle_name(rng.randrange(records)), i) for i in range(1000)]
        for request in hot:
            udp(request)  # into the response cache
        hits = [hot[rng.randrange(len(hot))] for _ in range(count)]
        results = {"cache hit": timed(udp, hits)}
        server.responses.max_entries = 0  # from here on, every request misses
        server.responses.clear()
        warm = draws()
        timed(udp, warm)
        results["encoded miss"] = timed(udp, draws())
        sent = transport.sent
        timed(full, warm)
        results["full miss"] = timed(full, draws())
        assert transport.sent == sent  # the full path was measured without the listener
        assert codec.decode_message(transport.last).header.response.name == "SUCCESS"
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process cost of one UDP resolution.")
    parser.add_argument("--records", type=int, default=100_000, help="records in the store")
    parser.add_argument("--store", type=Path, help="an embedded store already loaded")
    parser.add_argument("--requests", type=int, default=50_000, help="requests per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        store_path = args.store
        if store_path is None:
            store_path = Path(work) / "handles.sqlite3"
            rate = asyncio.run(load_store(store_path, args.records))
            console.print(f"loaded {args.records:,} records at {rate:,.0f}/s")
            asyncio.run(_home(store_path))
        results = asyncio.run(measure(store_path, args.records, args.requests))
    if args.json:
        print(json.dumps({"benchmark": "id_inprocess", "records": args.records, **results}))
        return 0
    table = Table(title=f"One UDP resolution in process, {args.records:,} records (µs)")
    for column in ("path", "p50", "p99", "mean"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for path, figures in results.items():
        table.add_row(path, *(f"{figures[k]:.2f}" for k in ("p50_us", "p99_us", "mean_us")))
    console.print(table)
    return 0


async def _home(store_path: Path) -> None:
    async with open_store(store_path) as store:
        await store.home_prefix(PREFIX)


if __name__ == "__main__":
    sys.exit(main())
