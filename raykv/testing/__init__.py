"""raykv.testing: the test harnesses, shipped as code (as hashicorp/raft ships ``testing.go``), one
home above the services so that ``actors/`` depends on nothing above it.

- :mod:`raykv.testing.raft_harness`: the Raft harness (the reference's ``raft/config.go``);
- :mod:`raykv.testing.kv_harness`: kvraft's (``kvraft/config.go``);
- :mod:`raykv.testing.ctrler_harness`: the shard controller's harness (the reference's
  ``shardctrler/config.go``) and the configuration checks of its tests;
- :mod:`raykv.testing.shardkv_harness`: the sharded KV's (``shardkv/config.go``).

Import the modules themselves: this package imports nothing, so that importing it costs nothing.
"""
