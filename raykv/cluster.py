"""Start or connect to a Ray cluster, with raykv's namespace conventions.

:func:`init_ray` is the one entry point. Where it leads depends on ``address``:

* ``None``: the ``RAY_ADDRESS`` environment variable if it is set, otherwise ``"local"``;
* ``"local"``: start an embedded single-node Ray runtime in this process (what a laptop wants). Ray's
  own ``ray.init()`` would instead attach to whatever cluster it last saw on this machine (the
  ``/tmp/ray/ray_current_cluster`` file that ``ray start`` and ``ray.cluster_utils.Cluster`` leave
  behind), which is rarely what a demo or an experiment means;
* ``"auto"``: connect to the Ray cluster running on this machine (started with ``ray start``);
* ``"HOST:PORT"`` or ``"ray://HOST:PORT"``: connect to that cluster.

If Ray is already initialised in this process (a notebook, a test session), :func:`init_ray` reuses
it and leaves it running when the returned :class:`RayCluster` is shut down; it only ever shuts down
what it started itself.

Namespaces: named actors live in a namespace, and each experiment should use its own so that two
runs on one cluster cannot see each other's actors. The default is :data:`DEFAULT_NAMESPACE`; a
caller that asks for a namespace different from the one the running runtime already uses gets a
:class:`ClusterError` (Ray cannot switch namespaces without a restart).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_NAMESPACE", "ClusterError", "RayCluster", "connect", "init_ray"]

#: The namespace raykv uses when the caller names none.
DEFAULT_NAMESPACE = "raykv"


class ClusterError(RuntimeError):
    """Ray could not be started or reached, or the running runtime does not fit the request."""


@dataclass(frozen=True)
class RayCluster:
    """The Ray runtime this process is attached to, and whether :func:`init_ray` started it.

    Use it as a context manager (or call :meth:`shutdown`) to release what was started:
    ``with init_ray() as cluster: ...``.
    """

    #: the GCS address of the cluster (``host:port``), or ``""`` for a Ray Client connection
    address: str
    #: the namespace this process's named actors live in
    namespace: str
    #: ``"embedded"`` (started here), ``"connected"`` (joined an existing cluster) or ``"reused"``
    #: (Ray was already initialised in this process)
    mode: str
    #: CPUs of the whole cluster when it was attached
    cpus: float
    #: live nodes of the cluster when it was attached
    nodes: int

    @property
    def owned(self) -> bool:
        """Whether this process initialised Ray here (and so should shut it down)."""
        return self.mode != "reused"

    def shutdown(self) -> None:
        """Disconnect from Ray (stopping an embedded runtime), unless Ray was reused."""
        if self.owned:
            import ray

            ray.shutdown()

    def describe(self) -> str:
        """One line for people: ``embedded Ray at 127.0.0.1:6379 (2 CPUs, namespace 'raykv')``."""
        where = f"at {self.address}" if self.address else "via Ray Client"
        nodes = f"{self.nodes} nodes, " if self.nodes > 1 else ""
        return f"{self.mode} Ray {where} ({nodes}{self.cpus:g} CPUs, namespace {self.namespace!r})"

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def init_ray(
    address: str | None = None,
    namespace: str | None = None,
    *,
    num_cpus: int | None = None,
    log_to_driver: bool = True,
    logging_level: int = logging.WARNING,
    include_dashboard: bool = False,
) -> RayCluster:
    """Attach this process to Ray: reuse it, start an embedded runtime, or connect (see the module).

    ``num_cpus`` only applies to an embedded runtime (a cluster you connect to has its own).
    ``namespace`` defaults to :data:`DEFAULT_NAMESPACE` when Ray is started or connected here, and to
    whatever the running runtime uses when it is reused. Raises :class:`ClusterError` when Ray cannot
    be started or reached, or when the reused runtime's namespace differs from ``namespace``.
    """
    import ray

    if ray.is_initialized():
        current = ray.get_runtime_context().namespace
        if namespace is not None and namespace != current:
            raise ClusterError(
                f"Ray is already initialised in this process with namespace {current!r}, not "
                f"{namespace!r}; call ray.shutdown() first or pass namespace={current!r}")
        return _describe("reused", current)

    target = address if address is not None else (os.environ.get("RAY_ADDRESS") or "local")
    namespace = namespace or DEFAULT_NAMESPACE
    kwargs: dict[str, Any] = {
        "namespace": namespace,
        "log_to_driver": log_to_driver,
        "logging_level": logging_level,
    }
    if target == "local":
        kwargs.update(address="local", include_dashboard=include_dashboard)
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        mode = "embedded"
    else:
        if num_cpus is not None:
            raise ClusterError(
                f"num_cpus={num_cpus} only applies to an embedded runtime; the cluster at {target!r} "
                "has its own resources")
        kwargs["address"] = target
        mode = "connected"
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        what = "start an embedded Ray runtime" if mode == "embedded" else f"connect to Ray at {target!r}"
        raise ClusterError(f"could not {what}: {e}") from e
    return _describe(mode, namespace)


def connect(address: str = "auto", namespace: str | None = None) -> RayCluster:
    """Connect to an existing cluster (``"auto"``: the one running on this machine); never start one."""
    if address == "local":
        raise ClusterError("connect() joins an existing cluster; use init_ray() to start an embedded one")
    return init_ray(address, namespace)


def _describe(mode: str, namespace: str) -> RayCluster:
    import ray

    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client connections have no GCS address on the driver side
        address = ""
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return RayCluster(address=address, namespace=namespace, mode=mode, cpus=cpus, nodes=nodes)
