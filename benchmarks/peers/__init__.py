"""What raykv's benchmarks measure it against, and how they drive load.

- :mod:`peers.load`: one closed-loop load driver for every system (N asyncio writers, each issuing its
  next operation when the last one answered; latencies of the operations started in the measured
  window), so raykv, etcd and the floors are measured by the same code.
- :mod:`peers.etcd`: a throwaway etcd cluster on loopback (start, wait until healthy, find the
  leader, stop and clean up) and an asyncio writer through ``aetcd``.
- :mod:`peers.pysyncobj_kv`: a replicated KV on PySyncObj in 3 processes on loopback (each with an
  asyncio front calling the replicated methods with callbacks), started and stopped by the
  benchmark, and a multiplexed asyncio client for it.
- :mod:`peers.tcp_echo`: the bare asyncio TCP round trip between two Python processes (the floor
  under any stream transport).

Import as ``from peers import ...`` with ``benchmarks/`` on ``sys.path`` (the benchmark scripts put
it there). Nothing here imports Ray.
"""
