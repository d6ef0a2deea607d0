"""Scaling of ``augment generate`` on a Ray cluster (not a test): the same job on 1 and 2 nodes.

    augment train --data ../shared/data/bank_marketing.parquet --label y --out models/bank
    python benchmarks/bench_scale.py --model models/bank [--rows 2000000] [--cpus-per-node 1] [--out /tmp/scale]

Each node is a host of its own where network namespaces can be made (as root: tests/multinode.py, the cluster
the test suite uses), else a Ray node on loopback; every node gets ``--cpus-per-node`` CPUs. For each cluster
size the driver (on the head node) first runs ``--dry-run`` and then the job itself, as a fresh process; the
table gives the job's wall time (driver start to exit: imports, connect, actors, every row, manifest), rows/s,
rows/s per node, the dry-run's estimate against the measured time, Ray's start-up as the manifest records it,
and the peak resident memory of each node (all its processes: raylet, GCS on the head, workers) sampled every
0.5 s. Output goes to a local folder every node sees (the file system is shared; only the network is not).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from multinode import start_cluster  # noqa: E402


def run(cluster, args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = cluster.augment(args, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"augment {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{cluster.logs()}")
    return time.perf_counter() - t0, r.stdout


def sample_rss(cluster, peak: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        for name, mib in cluster.rss_mib().items():
            if mib > 0:  # a node that is not started has no processes
                peak[name] = max(peak.get(name, 0.0), mib)
        stop.wait(0.5)


def one(nodes: int, a) -> dict:
    cluster = start_cluster(cpus=a.cpus_per_node, nodes=nodes)
    try:
        out = Path(a.out) / f"nodes{nodes}"
        shutil.rmtree(out, ignore_errors=True)
        job = ["generate", "--model", str(Path(a.model).resolve()), "--rows", str(a.rows), "--rows-per-file",
               str(a.rows_per_file), "--seed", "7", "--engine", "ray", "--ray-address", cluster.address,
               "--quiet", "--out", str(out)]
        _, text = run(cluster, [*job, "--dry-run"])
        estimate = float(re.search(r"on disk, ([\d,.]+) s", text).group(1).replace(",", ""))
        peak: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(cluster, peak, stop), daemon=True)
        sampler.start()
        try:
            wall, _ = run(cluster, job)
        finally:
            stop.set()
            sampler.join()
        m = json.loads((out / "_manifest.json").read_text())
        shutil.rmtree(out, ignore_errors=True)
        return {"mode": cluster.mode, "nodes": nodes, "cpus": nodes * a.cpus_per_node, "rows": m["rows"],
                "wall_s": wall, "generate_s": m["timings"]["generate_s"],
                "startup_s": m["timings"].get("ray_startup_s", float("nan")), "estimate_s": estimate,
                "used": len({f.get("node") for f in m["files"]}), "peak": peak}
    finally:
        cluster.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rows-per-file", type=int, default=100_000)
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--nodes", default="1,2", help="cluster sizes to run, comma-separated (1 or 2)")
    p.add_argument("--out", default="/tmp/augment-bench-scale")
    a = p.parse_args()
    rows = [one(int(n), a) for n in a.nodes.split(",")]
    base = rows[0]["rows"] / rows[0]["wall_s"]
    print(f"\nmode: {rows[0]['mode']}; {a.rows:,} rows in files of {a.rows_per_file:,}; {a.cpus_per_node} CPU(s) a node\n")
    print("| nodes | CPUs | nodes that wrote | wall s (start-up included) | rows/s | rows/s per node | speed-up "
          "| dry-run estimate s | estimate / measured | Ray start-up s | peak RSS per node MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        rate = r["rows"] / r["wall_s"]
        rss = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["peak"].items()))
        print(f"| {r['nodes']} | {r['cpus']} | {r['used']} | {r['wall_s']:.1f} | {rate:,.0f} | {rate / r['nodes']:,.0f} "
              f"| {rate / base:.2f}x | {r['estimate_s']:.1f} | {r['estimate_s'] / r['wall_s']:.2f} "
              f"| {r['startup_s']:.1f} | {rss} |")


if __name__ == "__main__":
    main()
