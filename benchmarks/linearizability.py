"""Time the linearizability checker on every shared history and on generated many-client ones.

    python benchmarks/linearizability.py [--data DIR] [--repeat N] [--json FILE] [--no-generated]

Checks every Jepsen log (one register per file) and every KV log both per key and as one whole,
unpartitioned history; verifies each verdict against the known one; prints the time of each
check (parsing included) and the totals.  Then the generated rows (tests/histgen.py): a
50-client, 10-key, 200-operations-per-key append history (2,000 operations), linearizable, and
with one read made wrong three ways, checked per key (stopping at the first failing key) and
with ``all_partitions`` (every key, each under its own 2 s budget).  Each generated row runs in
a forked child process, so its peak resident memory is measured alone (``peak_mb``: the child's
ru_maxrss, which includes the interpreter and the parent's pages it touched).  Exit status 1 if
any verdict is wrong.

The data folder defaults to ``<repo>/../shared/data/linearizability`` (or RAYKV_SHARED_DATA,
which may name the ``shared/data`` folder or the ``linearizability`` folder itself).
Reference (README of the data): porcupine, in Go, checks all of it in about 4 s on the 2-core
development machine, its slowest Jepsen log in 0.19 s, and c10-ok / c10-bad whole in ~2 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from histgen import append_history, mutate_read  # noqa: E402

from linearizability import KVModel, RegisterModel, Verdict, check, parse_file  # noqa: E402

#: The generated histories: (clients, keys, operations per key, seed).
GENERATED = (50, 10, 200, 1)
#: Budget per key for the all-partitions rows.
PER_KEY_BUDGET = 2.0


def default_data() -> Path:
    env = os.environ.get("RAYKV_SHARED_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if (root / "jepsen").is_dir() else root / "linearizability"


def cases(data: Path) -> list[tuple[str, Path, str, bool, bool]]:
    """(label, path, format, partitioned, expected linearizable) for every history."""
    verdicts_file = data / "jepsen" / "verdicts.txt"
    if not verdicts_file.is_file():
        raise SystemExit(f"error: {verdicts_file} not found; pass --data or set RAYKV_SHARED_DATA")
    out = []
    for line in verdicts_file.read_text().splitlines():
        if line.strip():
            name, verdict = line.split()
            out.append((f"jepsen/{name}", data / "jepsen" / name, "jepsen", True, verdict == "true"))
    for path in sorted((data / "kv").glob("*.txt")):
        for partitioned in (True, False):
            label = f"kv/{path.name} {'per-key' if partitioned else 'whole'}"
            out.append((label, path, "kv", partitioned, path.stem.endswith("-ok")))
    return out


def _in_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` in a forked child and add its peak resident memory (``peak_mb``); in this
    process, without ``peak_mb``, where fork is not available."""
    if not hasattr(os, "fork"):
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            payload = json.dumps(fn()).encode()
        except BaseException as e:  # report, never fall through into the parent's code
            payload = json.dumps({"error": repr(e)}).encode()
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    _, _, usage = os.wait4(pid, 0)
    row: dict[str, Any] = json.loads(data or b'{"error": "the child died"}')
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KB on Linux
    row["peak_mb"] = usage.ru_maxrss * scale / 2**20
    return row


def generated_rows() -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(label, run) for each generated history; run returns the row."""
    clients, keys, per_key, seed = GENERATED
    name = f"gen/c{clients}-k{keys}-p{per_key}"

    def runner(kind: str | None, all_partitions: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            history = append_history(clients, keys, per_key, seed)
            if kind is not None:
                history, _ = mutate_read(history, 0, kind)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            result = check(
                history,
                KVModel(),
                all_partitions=all_partitions,
                timeout=PER_KEY_BUDGET if all_partitions else None,
            )
            seconds = time.perf_counter() - t0
            expected = Verdict.LINEARIZABLE if kind is None else Verdict.NOT_LINEARIZABLE
            return {
                "seconds": seconds,
                "verdict": str(result.verdict),
                "correct": result.verdict is expected,
                "operations": len(history),
                "explored": sum(p.explored for p in result.partitions),
                "slowest_key_seconds": max(p.elapsed for p in result.partitions),
                "failing_keys": len(result.failures),
                "unknown_keys": sum(
                    p.verdict is Verdict.UNKNOWN and not p.skipped for p in result.partitions
                ),
            }

        return run

    rows = [(f"{name} ok per-key", runner(None, False))]
    for kind in ("drop", "swap", "phantom"):
        rows.append((f"{name} {kind} per-key", runner(kind, False)))
    rows.append((f"{name} ok all-keys", runner(None, True)))
    rows.append((f"{name} drop all-keys", runner("drop", True)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the linearizability data folder")
    parser.add_argument("--repeat", type=int, default=1, help="runs per history; the best counts")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated histories")
    args = parser.parse_args(argv)
    data = args.data or default_data()
    models = {"jepsen": RegisterModel(), "kv": KVModel()}

    started = time.perf_counter()
    rows = []
    wrong = 0
    for label, path, fmt, partitioned, expected in cases(data):
        best = float("inf")
        for _ in range(max(args.repeat, 1)):
            t0 = time.perf_counter()
            history = parse_file(path, fmt)
            result = check(history, models[fmt], partitioned=partitioned)
            best = min(best, time.perf_counter() - t0)
        ok = result.verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)
        wrong += not ok
        explored = sum(p.explored for p in result.partitions)
        rows.append(
            {
                "history": label,
                "seconds": best,
                "verdict": str(result.verdict),
                "correct": ok,
                "operations": len(history),
                "explored": explored,
            }
        )
        if not args.quiet:
            mark = "" if ok else "  WRONG VERDICT"
            print(
                f"{best:8.4f}s  {label:32} {result.verdict!s:17} {len(history):4} ops "
                f"{explored:8} configs{mark}",
                flush=True,
            )

    generated = []
    for label, run in [] if args.no_generated else generated_rows():
        runs = [_in_child(run) for _ in range(max(args.repeat, 1))]
        if any("error" in r for r in runs):
            print(f"{label}: failed: {[r.get('error') for r in runs]}", file=sys.stderr)
            wrong += 1
            continue
        row = min(runs, key=lambda r: r["seconds"])
        row["peak_mb"] = max(r.get("peak_mb", 0.0) for r in runs)
        row["history"] = label
        wrong += not row["correct"]
        generated.append(row)
        if not args.quiet:
            mark = "" if row["correct"] else "  WRONG VERDICT"
            print(
                f"{row['seconds']:8.4f}s  {label:32} {row['verdict']:17} {row['operations']:4} ops "
                f"{row['explored']:8} configs  peak {row['peak_mb']:.0f} MB  slowest key "
                f"{row['slowest_key_seconds']:.3f}s{mark}",
                flush=True,
            )

    def total(prefix: str) -> float:
        return sum(r["seconds"] for r in rows if r["history"].startswith(prefix))

    jepsen = [r for r in rows if r["history"].startswith("jepsen/")]
    slowest = max(jepsen, key=lambda r: r["seconds"])
    summary = {
        "total_seconds": sum(r["seconds"] for r in rows),
        "jepsen_seconds": total("jepsen/"),
        "kv_per_key_seconds": sum(r["seconds"] for r in rows if r["history"].endswith("per-key")),
        "kv_whole_seconds": sum(r["seconds"] for r in rows if r["history"].endswith("whole")),
        "slowest_jepsen": {"history": slowest["history"], "seconds": slowest["seconds"]},
        "slowest": max(rows, key=lambda r: r["seconds"]),
        "wall_seconds_in_process": time.perf_counter() - started,
        "wrong_verdicts": wrong,
        "generated": {r["history"]: {"seconds": r["seconds"], "peak_mb": r["peak_mb"]} for r in generated},
        "peak_rss_mb_of_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * (1 if sys.platform == "darwin" else 1024)
        / 2**20,
        "python": platform.python_version(),
    }
    print(
        f"total {summary['total_seconds']:.3f}s  (jepsen {summary['jepsen_seconds']:.3f}s, "
        f"kv per key {summary['kv_per_key_seconds']:.3f}s, kv whole "
        f"{summary['kv_whole_seconds']:.3f}s); slowest Jepsen {slowest['history']} "
        f"{slowest['seconds']:.3f}s; slowest overall {summary['slowest']['history']} "
        f"{summary['slowest']['seconds']:.3f}s; {wrong} wrong verdicts"
    )
    for r in generated:
        print(f"  {r['history']}: {r['seconds']:.3f}s, peak {r['peak_mb']:.0f} MB")
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "histories": rows, "generated": generated}, indent=2) + "\n"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
