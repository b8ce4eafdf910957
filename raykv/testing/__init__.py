"""raykv.testing: the test harnesses, shipped as code (as hashicorp/raft ships ``testing.go``), one
home above the services so that ``actors/`` depends on nothing above it.

- :mod:`raykv.testing.raft_harness`: ``n`` Raft peers hosting the apply recorder (the reference's
  ``raft/config.go``), and the limits and helpers every harness shares;
- :mod:`raykv.testing.service_harness`: the base of the single-group services' harnesses (servers
  behind the faulty network, clerks, crash and restart, partitions, the ledger, the teardown);
- :mod:`raykv.testing.kv_harness`: kvraft's (``kvraft/config.go``);
- :mod:`raykv.testing.ctrler_harness`: the shard controller's (``shardctrler/config.go``) and the
  configuration checks of its tests;
- :mod:`raykv.testing.shardkv_harness`: the sharded KV's (``shardkv/config.go``): a controller service
  and shard groups on one network, and the recording and checking its tests share;
- :mod:`raykv.testing.faults`: the planted faults of every harness (``pytest --plant``, ``RAYKV_PLANT``).

Every peer any of them starts reports to the harness's ledger (:mod:`actors.ledger`), which checks
what the peers apply as it happens. Import the modules themselves: this package imports nothing, so
that importing it costs nothing.
"""
