"""Round trip of one authenticated stream call against a bare asyncio TCP echo, between two processes.

    python benchmarks/stream_rtt.py [--calls 5000] [--payload 16] [--json FILE]

A server process (started with ``spawn``) serves, on loopback:

  * ``tcp``:    a bare asyncio echo (the client writes fixed-size messages, one ``write`` each, and
                reads them back; the server answers each with one ``write``): the floor for any
                protocol on asyncio streams;
  * ``stream``: an :class:`actors.stream_server.StreamServer` whose handler returns the payload, called
                through an :class:`actors.stream_client.StreamClient` (handshake done once, frames,
                request ids, one task per request on the server).

Each is measured with 1 call in flight (``--calls`` sequential calls: p50/p90/p99 latency) and with
100 in flight (rounds of 100 concurrent calls: calls/s, and each round's latency). The time to open
and authenticate a stream connection (TCP connect + HMAC handshake) is measured too. No Ray.

``--json FILE`` writes ``{"payload_bytes", "connect_ms": {"p50", "p90"}, "results": [{"transport",
"in_flight", "calls", "p50_ms", "p90_ms", "p99_ms", "calls_per_s"}, ...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.stream_auth import new_secret
from actors.stream_client import StreamClient
from actors.stream_server import StreamServer

IN_FLIGHT = 100


def serve(kind: str, secret: bytes, payload: int, ports: Any) -> None:
    """The server process: listen, report the port, serve until terminated."""

    async def main() -> None:
        if kind == "stream":
            async def handler(method: str, data: bytes) -> bytes:
                return data

            server = StreamServer(handler, secret, label="bench")
            ports.put((await server.start())[1])
        else:
            async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    while True:
                        writer.write(await reader.readexactly(payload))
                except (asyncio.IncompleteReadError, OSError):
                    writer.close()

            listener = await asyncio.start_server(echo, "127.0.0.1", 0)
            ports.put(listener.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": statistics.median(samples) * 1e3, "p90_ms": cuts[89] * 1e3, "p99_ms": cuts[98] * 1e3}


async def measure_tcp(port: int, calls: int, payload: int) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"x" * payload

    async def one() -> None:
        writer.write(data)
        await reader.readexactly(payload)

    async def round_of_100() -> None:  # 100 messages written one by one, read back one by one
        for _ in range(IN_FLIGHT):
            writer.write(data)
        for _ in range(IN_FLIGHT):
            await reader.readexactly(payload)

    rows = await measure("tcp", one, round_of_100, calls)
    writer.close()
    return rows


async def measure_stream(port: int, secret: bytes, calls: int, payload: int) -> tuple[list[dict[str, Any]],
                                                                                     dict[str, float]]:
    data = b"x" * payload
    connects = []
    for _ in range(50):
        client = StreamClient(("127.0.0.1", port), secret)
        t = time.perf_counter()
        ok, _ = await client.start("echo", data, 5.0)
        connects.append(time.perf_counter() - t)
        assert ok
        await client.close()
    client = StreamClient(("127.0.0.1", port), secret)

    async def one() -> None:
        ok, reply = await client.start("echo", data, 5.0)
        assert ok and reply == data

    async def round_of_100() -> None:
        results = await asyncio.gather(*(client.start("echo", data, 5.0) for _ in range(IN_FLIGHT)))
        assert all(ok for ok, _ in results)

    rows = await measure("stream", one, round_of_100, calls)
    await client.close()
    connect = {"p50": statistics.median(connects) * 1e3,
               "p90": statistics.quantiles(connects, n=10)[-1] * 1e3}
    return rows, connect


async def measure(name: str, one: Any, round_of_100: Any, calls: int) -> list[dict[str, Any]]:
    for _ in range(200):  # warm up
        await one()
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        await one()
        samples.append(time.perf_counter() - t)
    seq = {"transport": name, "in_flight": 1, "calls": calls, **quantiles(samples),
           "calls_per_s": calls / sum(samples)}
    rounds = max(10, calls // IN_FLIGHT)
    for _ in range(5):
        await round_of_100()
    batch = []
    for _ in range(rounds):
        t = time.perf_counter()
        await round_of_100()
        batch.append(time.perf_counter() - t)
    par = {"transport": name, "in_flight": IN_FLIGHT, "calls": rounds * IN_FLIGHT, **quantiles(batch),
           "calls_per_s": rounds * IN_FLIGHT / sum(batch)}
    return [seq, par]


def run_against(kind: str, secret: bytes, calls: int, payload: int) -> tuple[list[dict[str, Any]],
                                                                             dict[str, float] | None]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=serve, args=(kind, secret, payload, ports), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=30)
        if kind == "stream":
            return asyncio.run(measure_stream(port, secret, calls, payload))
        return asyncio.run(measure_tcp(port, calls, payload)), None
    finally:
        proc.terminate()
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000,
                        help="sequential calls per transport (default 5000)")
    parser.add_argument("--payload", type=int, default=16, help="payload bytes per call (default 16)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    a = parser.parse_args()
    if a.calls < 100 or a.payload < 1:
        parser.error("--calls must be at least 100 and --payload at least 1")
    secret = new_secret()
    tcp, _ = run_against("tcp", secret, a.calls, a.payload)
    stream, connect = run_against("stream", secret, a.calls, a.payload)
    rows = tcp + stream
    print(f"payload {a.payload} bytes, server in another process, loopback")
    print(f"{'transport':10s} {'in flight':>9s} {'calls':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} "
          f"{'calls/s':>9s}")
    for r in rows:
        print(f"{r['transport']:10s} {r['in_flight']:9d} {r['calls']:7d} {r['p50_ms']:8.3f} "
              f"{r['p90_ms']:8.3f} {r['p99_ms']:8.3f} {r['calls_per_s']:9,.0f}")
    assert connect is not None
    print(f"stream connect + handshake: p50 {connect['p50']:.3f} ms, p90 {connect['p90']:.3f} ms")
    seq = {r["transport"]: r for r in rows if r["in_flight"] == 1}
    print(f"stream / tcp at 1 in flight (p50): {seq['stream']['p50_ms'] / seq['tcp']['p50_ms']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps({"payload_bytes": a.payload, "connect_ms": connect, "results": rows},
                                     indent=2) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
