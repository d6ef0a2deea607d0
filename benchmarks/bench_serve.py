"""Load test of `augment serve` over loopback: requests/s and p50/p99 latency per (server, rows, format, clients),
errors, and the server's memory; plus an optional long run that checks memory does not grow.

    python benchmarks/bench_serve.py --model models/bank                        # the full matrix, ~10 min
    python benchmarks/bench_serve.py --model models/bank --servers uvicorn --seconds 3 --memory-seconds 0
    python benchmarks/bench_serve.py --model models/bank --only-memory --memory-seconds 300
    python benchmarks/bench_serve.py --model models/bank --hostile 30           # mixed hostile load, then exit

Each server runs as `augment serve` in a subprocess on 127.0.0.1 (never another interface). Every cell is
bounded by --seconds and --max-requests, whichever comes first. Clients are asyncio + aiohttp in this process,
so on a small machine they take CPU from the server: the numbers are a floor, not the server's ceiling.
Memory is the proportional set size (PSS) of the server's whole process tree (for Ray: driver, GCS, raylet,
agents, controller, proxy and replicas), read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa

ARROW = "application/vnd.apache.arrow.stream"
ACCEPT = {"json": "application/json", "arrow": ARROW}


# --- memory of a process tree ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _proc_kb(path: str, key: str) -> int | None:
    """The kB figure on the ``key`` line of a /proc file, or None (no such line, or the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_mb(pid: int) -> float:
    """PSS of one process in MB (RSS when smaps_rollup is unreadable)."""
    kb = _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
    if kb is None:
        kb = _proc_kb(f"/proc/{pid}/status", "VmRSS:")
    return (kb or 0) / 1024


def tree_mb(pid: int) -> float:
    return sum(pss_mb(p) for p in tree(pid))


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic() - t0, tree_mb(self.pid)))
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


# --- servers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, kind: str, model: str, replicas: int, max_rows: int, extra: list[str] | None = None) -> None:
        self.kind, self.port = kind, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "augment.cli", "serve", "--model", model, "--host", "127.0.0.1",
               "--port", str(self.port), "--max-rows", str(max_rows), "--log-level", "warning", *(extra or [])]
        if kind == "ray":
            cmd += ["--ray", "--replicas", str(replicas), "--threads", "1"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.log = open(f"/tmp/bench_serve_{kind}_{self.port}.log", "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self._wait_healthy(t0)

    def _wait_healthy(self, t0: float, timeout: float = 120) -> None:
        import urllib.request

        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as r:
                    if r.status == 200:
                        self.start_s = time.monotonic() - t0
                        self.idle_mb = tree_mb(self.proc.pid)
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} server not healthy within {timeout} s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- load ----------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    server: str
    rows: int
    format: str
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    req_per_s: float = 0.0
    rows_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mb_per_response: float = 0.0
    max_server_mb: float = 0.0
    first_error: str = field(default="", repr=False)


async def load(base: str, classes: list[str], rows: int, fmt: str, clients: int, seconds: float, max_requests: int,
               check: bool = True) -> tuple[list[float], int, int, str]:
    """Closed-loop load: ``clients`` workers, each sends its next request when the last one is answered."""
    latencies: list[float] = []
    errors, sent, total_bytes, first_error = 0, 0, 0, ""
    deadline = time.monotonic() + seconds
    headers = {"accept": ACCEPT[fmt], "content-type": "application/json"}
    per_class = {classes[0]: rows // 2, classes[-1]: rows - rows // 2} if len(classes) > 1 else {classes[0]: rows}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors, sent, total_bytes, first_error, check
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                body = orjson.dumps({"counts": per_class, "seed": sent})
                t0 = time.perf_counter()
                try:
                    async with session.post(f"{base}/v1/generate", data=body, headers=headers) as r:
                        payload = await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    ok, payload = False, repr(exc).encode()
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    errors += 1
                    first_error = first_error or payload[:300].decode(errors="replace")
                    continue
                total_bytes += len(payload)
                if check:  # the first answer of a cell is decoded and counted
                    check = False
                    got = len(orjson.loads(payload)["rows"]) if fmt == "json" else pa.ipc.open_stream(payload).read_all().num_rows
                    if got != rows:
                        errors += 1
                        first_error = f"asked for {rows} rows, got {got}"

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, total_bytes, first_error


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_cell(server: Server, classes: list[str], rows: int, fmt: str, clients: int, seconds: float,
             max_requests: int) -> Cell:
    asyncio.run(load(server.base, classes, rows, fmt, min(clients, 2), 30, 2 * min(clients, 2), check=False))  # warm-up
    sampler = MemorySampler(server.proc.pid, 0.5)
    sampler.start()
    t0 = time.perf_counter()
    latencies, errors, total_bytes, first_error = asyncio.run(
        load(server.base, classes, rows, fmt, clients, seconds, max_requests))
    wall = time.perf_counter() - t0
    mem = sampler.stop()
    n = len(latencies)
    return Cell(
        server=server.kind, rows=rows, format=fmt, clients=clients, requests=n, errors=errors, seconds=round(wall, 2),
        req_per_s=round(n / wall, 1), rows_per_s=round((n - errors) * rows / wall),
        p50_ms=round(1000 * percentile(latencies, 0.5), 1), p99_ms=round(1000 * percentile(latencies, 0.99), 1),
        mb_per_response=round(total_bytes / max(1, n - errors) / 1e6, 3), max_server_mb=round(max(m for _, m in mem), 1),
        first_error=first_error,
    )


def memory_run(server: Server, classes: list[str], seconds: float, clients: int) -> dict:
    """A long mixed load (100- and 10,000-row requests, JSON and Arrow): is the server's memory flat?"""
    sampler = MemorySampler(server.proc.pid, 5.0)
    sampler.start()
    t0 = time.monotonic()
    requests = errors = 0
    i = 0
    idle: list[tuple[float, float]] = []  # between phases, nothing in flight: what the server keeps
    while time.monotonic() - t0 < seconds:
        rows, fmt = [(100, "json"), (10_000, "arrow"), (10_000, "json"), (100, "arrow")][i % 4]
        lat, err, _, _ = asyncio.run(load(server.base, classes, rows, fmt, clients, min(10.0, seconds - (time.monotonic() - t0)) + 0.01, 10**9, check=False))
        requests += len(lat)
        errors += err
        i += 1
        idle.append((time.monotonic() - t0, tree_mb(server.proc.pid)))
    samples = sampler.stop()
    mb = [m for _, m in samples]
    k = max(1, len(mb) // 5)
    return {
        "server": server.kind, "seconds": round(time.monotonic() - t0), "requests": requests, "errors": errors,
        "mb_start": round(mb[0], 1), "mb_first_fifth_mean": round(statistics.mean(mb[:k]), 1),
        "mb_last_fifth_mean": round(statistics.mean(mb[-k:]), 1), "mb_max": round(max(mb), 1),
        "mb_per_min_fit": round(60 * _slope(samples), 2),
        "idle_mb_first": round(idle[0][1], 1), "idle_mb_last": round(idle[-1][1], 1),
        "idle_mb_per_min_fit": round(60 * _slope(idle), 2),
        "idle_mb_per_min_after_60s": round(60 * _slope([p for p in idle if p[0] >= 60]), 2),  # past warm-up
        "samples": [(round(t), round(m, 1)) for t, m in samples],
        "idle_samples": [(round(t), round(m, 1)) for t, m in idle],
    }


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points (0 for fewer than two)."""
    if len(points) < 2:
        return 0.0
    ts, ys = [p[0] for p in points], [p[1] for p in points]
    mt, my = statistics.mean(ts), statistics.mean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den if den else 0.0


def markdown(cells: list[Cell]) -> str:
    lines = ["| server | rows/req | format | clients | requests | errors | req/s | rows/s | p50 ms | p99 ms | MB/resp | server MB (max) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c.server} | {c.rows} | {c.format} | {c.clients} | {c.requests} | {c.errors} | {c.req_per_s} | "
                     f"{c.rows_per_s:,} | {c.p50_ms} | {c.p99_ms} | {c.mb_per_response} | {c.max_server_mb} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--servers", default="uvicorn,ray", help="comma list of uvicorn, ray")
    p.add_argument("--sizes", default="100,10000", help="rows per request, comma list")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma list")
    p.add_argument("--formats", default="json,arrow", help="comma list of json, arrow")
    p.add_argument("--seconds", type=float, default=8.0, help="bound on each cell's duration")
    p.add_argument("--max-requests", type=int, default=2000, help="bound on each cell's requests")
    p.add_argument("--ray-replicas", type=int, default=2, help="replicas for the Ray Serve server")
    p.add_argument("--memory-seconds", type=float, default=0.0, help="length of the memory run (0: none; the issue asks for 300)")
    p.add_argument("--memory-server", default="uvicorn", help="server of the memory run")
    p.add_argument("--memory-clients", type=int, default=8)
    p.add_argument("--only-memory", action="store_true", help="skip the matrix")
    p.add_argument("--out", default=None, help="write all results as JSON here")
    p.add_argument("--hostile", type=float, default=0.0, help="seconds of mixed hostile load (then exit)")
    p.add_argument("--hostile-clients", type=int, default=8)
    args = p.parse_args()

    model = os.path.abspath(args.model)
    bundle = json.loads((Path(model) / "bundle.json").read_text())
    classes = [str(c) for c in bundle["label"]["classes"]]
    if args.hostile > 0:
        print(hostile_run(model, classes, args.hostile, args.hostile_clients))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {"model": model, "cpus": os.cpu_count(), "servers": {}, "cells": [], "memory": None}
    for kind in args.servers.split(","):
        need = args.memory_seconds > 0 and kind == args.memory_server
        if args.only_memory and not need:
            continue
        server = Server(kind, model, args.ray_replicas, max(sizes + [10_000]))
        print(f"# {kind}: healthy after {server.start_s:.1f} s, {server.idle_mb:.0f} MB idle", flush=True)
        results["servers"][kind] = {"start_s": round(server.start_s, 1), "idle_mb": round(server.idle_mb, 1)}
        try:
            if not args.only_memory:
                for rows in sizes:
                    for fmt in args.formats.split(","):
                        for clients in [int(c) for c in args.clients.split(",")]:
                            cell = run_cell(server, classes, rows, fmt, clients, args.seconds, args.max_requests)
                            results["cells"].append(asdict(cell))
                            print(markdown([cell]).splitlines()[-1], flush=True)
                            if cell.errors:
                                print(f"#   first error: {cell.first_error}", flush=True)
            if need:
                results["memory"] = memory_run(server, classes, args.memory_seconds, args.memory_clients)
                m = results["memory"]
                print(f"# memory run ({kind}, {m['seconds']} s, {m['requests']} requests, {m['errors']} errors): "
                      f"start {m['mb_start']} MB, first fifth {m['mb_first_fifth_mean']} MB, last fifth "
                      f"{m['mb_last_fifth_mean']} MB, max {m['mb_max']} MB, fitted {m['mb_per_min_fit']} MB/min; "
                      f"between phases {m['idle_mb_first']} -> {m['idle_mb_last']} MB "
                      f"({m['idle_mb_per_min_fit']} MB/min; {m['idle_mb_per_min_after_60s']} MB/min after the first minute)",
                      flush=True)
            results["servers"][kind]["end_mb"] = round(tree_mb(server.proc.pid), 1)
        finally:
            server.stop()
    if results["cells"]:
        print()
        print(markdown([Cell(**c) for c in results["cells"]]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


# --- hostile load: valid requests mixed with oversized, malformed and bomb ones --------------------------------


def hostile_requests(classes: list[str], max_rows: int, max_body: int) -> dict[str, tuple]:
    """kind -> (path, body bytes, content type, the statuses that count as refused correctly)."""
    import io

    import pyarrow.parquet as pq

    n = 2_000_000  # 2,000,000 rows in a few KB: the footer says so, and that is all the service reads
    bomb = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array([0] * n, pa.int8())}), bomb, compression="zstd")
    gen = lambda body: orjson.dumps(body)  # noqa: E731
    return {
        "valid": ("/v1/generate", gen({"counts": {classes[0]: 100}, "seed": 1}), "application/json", (200,)),
        "oversized rows": ("/v1/generate", gen({"counts": {classes[0]: max_rows + 1}}), "application/json", (413,)),
        "oversized body": ("/v1/perturb", b'{"rows": [' + b'{"a": 1},' * (max_body // 9) + b'{}]}', "application/json", (413,)),
        "malformed json": ("/v1/generate", b'{"counts": {', "application/json", (422,)),
        "count as string": ("/v1/generate", gen({"n": "5", "class": classes[0]}), "application/json", (422,)),
        "wrong type": ("/v1/generate", gen({"n": 5, "class": classes[0]}), "text/plain", (415,)),
        "parquet bomb": ("/v1/perturb", bomb.getvalue(), "application/vnd.apache.parquet", (413, 422)),
    }


async def hostile_load(base: str, requests: dict[str, tuple], clients: int, seconds: float) -> dict:
    kinds = list(requests)
    stats = {k: {"requests": 0, "as_expected": 0, "statuses": {}, "latencies": []} for k in kinds}
    stop = time.monotonic() + seconds

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        j = i
        while time.monotonic() < stop:
            kind = kinds[j % len(kinds)]
            j += 1
            path, body, ctype, ok = requests[kind]
            t0 = time.perf_counter()
            try:
                async with session.post(base + path, data=body, headers={"content-type": ctype}) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            s = stats[kind]
            s["requests"] += 1
            s["latencies"].append(time.perf_counter() - t0)
            s["statuses"][status] = s["statuses"].get(status, 0) + 1
            s["as_expected"] += status in ok

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    return stats


def hostile_run(model: str, classes: list[str], seconds: float, clients: int) -> str:
    max_rows, max_body = 10_000, 8 * 1024 * 1024
    server = Server("uvicorn", model, 1, max_rows, extra=["--max-body-bytes", str(max_body)])
    sampler = MemorySampler(server.proc.pid, 0.25)
    sampler.start()
    try:
        stats = asyncio.run(hostile_load(server.base, hostile_requests(classes, max_rows, max_body), clients, seconds))
    finally:
        samples = sampler.stop()
        server.stop()
    lines = [f"hostile load: {clients} clients, {seconds:g} s, uvicorn on 127.0.0.1, --max-rows {max_rows}, "
             f"--max-body-bytes {max_body}; server memory (PSS) idle {server.idle_mb:.0f} MB, "
             f"max {max(mb for _, mb in samples):.0f} MB", "",
             "| request | sent | answered as expected | statuses | p50 ms | p99 ms |", "|---|---:|---:|---|---:|---:|"]
    for kind, s in stats.items():
        lat = s["latencies"] or [0.0]
        lines.append(f"| {kind} | {s['requests']} | {s['as_expected']} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(s['statuses'].items(), key=str))} | "
                     f"{percentile(lat, 0.5) * 1000:.0f} | {percentile(lat, 0.99) * 1000:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
