"""Round-trip cost of one call through the FaultyNetwork actor vs a direct actor call.

    /work/venv/bin/python benchmarks/network_rtt.py [--calls 2000] [--payload 100]

Measures, from an async driver actor (as a replica would call):
  * direct:   ``await server.rpc.remote(...)``
  * relay:    through a minimal relaying actor (the floor for any network actor)
  * network:  ``await net.call.remote(end, ...)`` (reliable, no faults)
each sequentially (latency) and with 100 calls in flight (throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import ray

from actors.network import FaultyNetwork


@ray.remote(num_cpus=0)
class Echo:
    async def rpc(self, incarnation: int | None, method: str, args: tuple) -> object:
        return args[0]


@ray.remote(num_cpus=0, max_concurrency=10000)
class Relay:
    """The least a relaying actor can do: the floor under the network's own logic."""

    def __init__(self, server: object) -> None:
        self.server = server

    async def call(self, end: str, method: str, args: tuple) -> tuple[bool, object]:
        return True, await self.server.rpc.remote(0, method, args)  # type: ignore[attr-defined]


@ray.remote(num_cpus=0)
class Driver:
    async def run(
        self, server: object, relay: object, net: object, calls: int, payload: int
    ) -> dict[str, float]:
        data = b"x" * payload
        out: dict[str, float] = {}

        async def direct() -> None:
            await server.rpc.remote(0, "echo", (data,))  # type: ignore[attr-defined]

        async def via_relay() -> None:
            ok, _ = await relay.call.remote("e", "echo", (data,))  # type: ignore[attr-defined]
            assert ok

        async def via_net() -> None:
            ok, _ = await net.call.remote("e", "echo", (data,))  # type: ignore[attr-defined]
            assert ok

        for name, one in (("direct", direct), ("relay", via_relay), ("network", via_net)):
            for _ in range(50):  # warm up
                await one()
            samples = []
            for _ in range(calls):
                t = time.perf_counter()
                await one()
                samples.append(time.perf_counter() - t)
            out[f"{name}_median_ms"] = statistics.median(samples) * 1e3
            out[f"{name}_p90_ms"] = statistics.quantiles(samples, n=10)[-1] * 1e3
            t = time.perf_counter()
            for _ in range(calls // 100):
                await asyncio.gather(*(one() for _ in range(100)))
            out[f"{name}_calls_per_s_100_in_flight"] = (calls // 100 * 100) / (time.perf_counter() - t)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=100)
    a = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        server, net, driver = Echo.remote(), FaultyNetwork.remote(seed=1), Driver.remote()
        relay = Relay.remote(server)
        ray.get([net.add_server.remote("s", server, 0), net.make_end.remote("e", "s")])
        ray.get(net.enable.remote("e", True))
        result = ray.get(driver.run.remote(server, relay, net, a.calls, a.payload))
        for k, v in result.items():
            print(f"{k:36s} {v:10.2f}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
