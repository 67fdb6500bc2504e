"""What the security layer costs per operation: password hashing, rate checks, SM3/SM4, SM2.

Figures quoted in docs/security.md come from here, not from timings in tests:

- **argon2id**: one password verification with the parameters the platform uses
  (``argon2.PasswordHasher()`` defaults, RFC 9106's low-memory choice: 64 MiB, 3 passes,
  4 lanes), CPU and wall time; it bounds how many sign-ins a second a core can check.
- **Rate limit**: ``TokenBuckets.take`` on a tracked key (the identifier node's UDP path), and
  ``check`` on new keys until the table is full and beyond (the flood case).
- **SM3, SM4-GCM, SM2**: MB/s of ``hmac_sm3`` and of sealing with SM4-GCM (the outbox at
  rest), and signatures per second with SM2/SM3 (reports signed with ``--algorithm sm2``).

    .venv/bin/python bench/security_costs.py            # about 30 s
    .venv/bin/python bench/security_costs.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from rich.console import Console
from rich.table import Table

from tiangong.security import gm
from tiangong.security.ratelimit import TokenBuckets

console = Console()


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of one call, over ``repeat`` calls."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def per_call(fn: Callable[[int], object], calls: int) -> float:
    """Seconds per call of ``fn(i)`` over ``calls`` calls (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def argon2_figures(repeat: int) -> dict[str, Any]:
    hasher = PasswordHasher()
    stored = hasher.hash("correct horse battery staple")
    wall, cpu = timed(lambda: hasher.verify(stored, "correct horse battery staple"), repeat)
    return {
        "memory_kib": hasher.memory_cost,
        "time_cost": hasher.time_cost,
        "parallelism": hasher.parallelism,
        "verify_wall_ms": round(wall * 1000, 1),
        "verify_cpu_ms": round(cpu * 1000, 1),
    }


def rate_limit_figures(calls: int) -> dict[str, Any]:
    tracked: TokenBuckets[str] = TokenBuckets(rate=1e9, burst=1e9)
    tracked.take("10.0.0.1")
    take_s = per_call(lambda _i: tracked.take("10.0.0.1"), calls)
    fresh: TokenBuckets[str] = TokenBuckets(rate=100.0, burst=100.0, max_keys=65_536)
    new_s = per_call(lambda i: fresh.check(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"), calls)
    full: TokenBuckets[int] = TokenBuckets(rate=100.0, burst=100.0, max_keys=1_000)
    for i in range(1_000):
        full.check(i)
    flood_s = per_call(lambda i: full.check(10_000 + i), calls)
    return {
        "take_tracked_us": round(take_s * 1e6, 3),
        "check_new_key_us": round(new_s * 1e6, 3),
        "check_key_flood_us": round(flood_s * 1e6, 3),
        "keys_after_flood": len(full),
    }


def gm_figures() -> dict[str, Any]:
    key = gm.generate_sm4_key()
    message = os.urandom(64 * 1024)
    mac_s = per_call(lambda _i: gm.hmac_sm3(key, message), 20)
    seal_s = per_call(lambda _i: gm.seal(key, message), 20)
    sealed = gm.seal(key, message)
    open_s = per_call(lambda _i: gm.open_sealed(key, sealed), 20)
    figures: dict[str, Any] = {
        "hmac_sm3_mb_s": round(len(message) / mac_s / 1e6, 1),
        "sm4_gcm_seal_mb_s": round(len(message) / seal_s / 1e6, 1),
        "sm4_gcm_open_mb_s": round(len(message) / open_s / 1e6, 1),
    }
    private = gm.Sm2PrivateKey.generate()
    report = os.urandom(2048)
    sign_s = per_call(lambda _i: private.sign(report), 50)
    signature = private.sign(report)
    verify_s = per_call(lambda _i: private.public_key.verify(signature, report), 50)
    figures["sm2_sign_per_s"] = round(1 / sign_s)
    figures["sm2_verify_per_s"] = round(1 / verify_s)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-operation costs of the security layer.")
    parser.add_argument("--argon2-repeat", type=int, default=20, help="verifications timed")
    parser.add_argument("--calls", type=int, default=200_000, help="rate checks per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    with console.status("argon2id"):
        argon2 = argon2_figures(args.argon2_repeat)
    with console.status("rate limits"):
        rates = rate_limit_figures(args.calls)
    with console.status("SM3, SM4, SM2"):
        gms = gm_figures()
    doc = {
        "benchmark": "security_costs",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "argon2id": argon2,
        "rate_limit": rates,
        "gm": gms,
    }
    if args.json:
        print(json.dumps(doc))
        return 0
    table = Table(title="Security costs per operation")
    table.add_column("what")
    table.add_column("figure", justify="right")
    rows = [
        (
            f"argon2id verify ({argon2['memory_kib'] // 1024} MiB, t={argon2['time_cost']},"
            f" p={argon2['parallelism']}): wall / CPU",
            f"{argon2['verify_wall_ms']} / {argon2['verify_cpu_ms']} ms",
        ),
        ("rate limit, tracked key (take)", f"{rates['take_tracked_us']} µs"),
        ("rate limit, new key (check)", f"{rates['check_new_key_us']} µs"),
        ("rate limit, key flood past the table (check)", f"{rates['check_key_flood_us']} µs"),
        ("HMAC-SM3", f"{gms['hmac_sm3_mb_s']} MB/s"),
        ("SM4-GCM seal / open", f"{gms['sm4_gcm_seal_mb_s']} / {gms['sm4_gcm_open_mb_s']} MB/s"),
        ("SM2/SM3 sign / verify", f"{gms['sm2_sign_per_s']:,} / {gms['sm2_verify_per_s']:,} /s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{doc['machine']}[/dim]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
