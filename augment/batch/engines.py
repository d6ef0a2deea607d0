"""Engines run a job's shards: in this process (``local``) or on Ray actors (``ray``), with the same bytes.

Both call ``augment.batch.write.write_shards``: the local engine once for every shard, each Ray actor once per shard
it is handed. On Ray every actor loads the bundle once, writes its own files (the output folder must be visible
to every node: a shared or network file system on a cluster), and the driver keeps at most ``2 * workers``
shards in flight, so neither driver nor worker memory grows with the rows of a job. A worker that dies is
restarted and its shard retried (``max_restarts`` / ``max_task_retries``); the retry rewrites the same bytes
under a new temporary name. Actors ask for a share of the CPUs (at most 1) so two of them fit a 2-CPU node
(two ``num_cpus=1`` Ray Data actors there deadlock: ray issue 44687).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from augment.errors import AugmentError
from augment.batch.plan import Shard

__all__ = ["ENGINES", "LocalEngine", "RayEngine", "choose_engine", "check_ray_address"]

RAY_RETRIES = 3
PROGRESS_POLL_S = 0.25  # how often the driver asks Ray workers how many rows they have written


@dataclass
class LocalEngine:
    """This machine, no Ray: in this process, or in a pool of ``processes`` spawned worker processes.

    In process (the default), ``threads`` decode lanes (one per core) share one-thread onnxruntime sessions and
    a writer thread writes the files (``augment.batch.write.write_shards``): no start-up cost beyond loading the
    bundle. ``workers`` > 1 runs shards on that many spawned processes instead, each loading the bundle once
    and writing whole shards like a Ray actor, for a second or two of start-up (imports and bundle load); it
    pays off only for the modes that a process decodes in one lane (perturb, interpolate, row filters).
    Spawning re-imports the caller's ``__main__``: from a script it must sit behind
    ``if __name__ == "__main__"``; from stdin or a notebook the job stays in process.
    """

    name = "local"
    workers: int | None = None  # processes (None: 1, this one)
    threads: int | None = None  # cores per process: decode lanes when sampling, else onnxruntime threads

    def describe(self) -> dict:
        return {"name": self.name, "processes": self.processes, "threads": self.threads_used}

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, gen, bundle_path: str, spec, items: Iterable[tuple[Shard, object]], out_dir: str, *,
            on_rows: Callable[[int], None], on_shard: Callable[[dict], None], shards: int = 1) -> list[dict]:
        from augment.batch.write import write_shards

        cores = os.cpu_count() or 1
        self.processes = min(self.workers or 1, max(1, shards)) if _can_spawn() else 1
        self.threads_used = self.threads or max(1, cores // self.processes)
        if self.processes <= 1:
            with blas_single_thread():
                return write_shards(gen, spec, items, out_dir, on_rows=on_rows, on_shard=on_shard,
                                    threads=self.threads_used)
        return _run_pool(self.processes, self.threads_used, bundle_path, spec, items, out_dir, on_rows, on_shard,
                         device=getattr(gen, "device", "cpu"))


_WORKER: dict = {}


def blas_single_thread():
    """numpy's BLAS on one thread (a context manager; also applied once per worker process).

    onnxruntime has its own threads; an OpenBLAS pool spinning beside them (the mixture sampler's matmuls)
    halved the rows/s of a process here. Ray workers get OMP_NUM_THREADS=1 from Ray; this does the same for
    the in-process engine and the pool. threadpoolctl comes with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _can_spawn() -> bool:
    """Whether spawned processes can re-import ``__main__`` (a module, or a script file on disk)."""
    import sys

    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    return bool(path) and os.path.isfile(path)


def _pool_init(bundle_path: str, threads: int, progress, held, device: str = "cpu") -> None:
    import signal

    from augment.generator import Generator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops the pool
    blas_single_thread()  # for the life of the worker
    _WORKER.update(gen=Generator.from_path(bundle_path, threads=threads, device=device), threads=threads,
                   progress=progress, held=held)


def _pool_shard(spec_json: dict, shard_json: dict, source, out_dir: str) -> dict:
    from augment.batch.spec import JobSpec
    from augment.batch.write import write_shards

    source = _WORKER["held"] if source == "held" else source
    progress = _WORKER["progress"]
    return write_shards(_WORKER["gen"], JobSpec.from_json(spec_json), [(Shard.from_json(shard_json), source)],
                        out_dir, on_rows=progress.put, threads=_WORKER["threads"])[0]


def _run_pool(processes: int, threads: int, bundle_path: str, spec, items, out_dir: str, on_rows, on_shard, *,
              device: str = "cpu") -> list[dict]:
    """Shards on ``processes`` spawned processes, at most two each in flight; progress per written chunk."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    import pyarrow as pa

    items = iter(items)
    first = next(items, None)
    if first is None:
        return []
    held = first[1] if first[1] is not None and not isinstance(first[1], pa.Table) else None
    ctx = mp.get_context("spawn")  # never fork a process that runs onnxruntime and a writer thread
    progress = ctx.Queue()
    results: list[dict] = []
    pending: set = set()

    def drain() -> None:
        while True:
            try:
                on_rows(progress.get_nowait())
            except queue_mod.Empty:
                return

    pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_pool_init,
                               initargs=(bundle_path, threads, progress, held, device))
    try:
        for shard, source in _chain(first, items):
            while len(pending) >= 2 * processes:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for f in done:
                    results.append(f.result())
                    on_shard(results[-1])
            arg = "held" if held is not None and source is held else source
            pending.add(pool.submit(_pool_shard, spec.to_json(), shard.to_json(), arg, out_dir))
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for f in done:
                results.append(f.result())
                on_shard(results[-1])
        drain()
    except BrokenProcessPool as err:
        raise AugmentError(f"a worker process died ({err}); rerun with --resume to finish the job") from None
    except BaseException:  # Ctrl-C: stop the workers now rather than after their shards
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
            proc.join()
        raise
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _chain(first, rest):
    yield first
    yield from rest


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail within seconds, in one line, when an address does not answer as a Ray cluster.

    ``ray.init`` retries an unreachable or non-Ray address for about 20 s, printing a warning a second, so a
    HOST:PORT is first asked for its cluster id over gRPC with a deadline; a ray:// (Ray Client) address gets
    a TCP connect. ``auto`` is left to ``ray.init``, which fails fast when no local cluster is running.
    """
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise AugmentError(f"bad --ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    hint = "start one with `ray start --head` or drop --ray-address"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise AugmentError(f"cannot reach Ray at {address!r} ({err.strerror or err}): {hint}") from None
    if client:
        return
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:  # a cluster with token auth still answers as Ray
                raise AugmentError(f"{address!r} does not answer as a Ray cluster ({err.code().name}): {hint}") from None


def _shard_actor_class():
    import ray

    @ray.remote(max_restarts=RAY_RETRIES, max_task_retries=RAY_RETRIES)
    class ShardActor:
        """Loads the bundle once; writes the shards it is handed."""

        def __init__(self, bundle_path: str, threads: int, device: str = "cpu"):
            from augment.generator import Generator

            blas_single_thread()  # for the life of the actor (Ray sets OMP_NUM_THREADS only for whole CPUs)
            # the driver's provider, so every shard's bytes come from the same one (CPU unless --device cuda)
            self.gen = Generator.from_path(bundle_path, threads=threads, device=device)
            self.threads = threads

        def run(self, spec_json: dict, shard_json: dict, source, out_dir: str, die_marker: str | None = None,
                progress=None) -> dict:
            from augment.batch.spec import JobSpec
            from augment.batch.write import write_shards

            shard = Shard.from_json(shard_json)
            written = 0

            def on_rows(n: int) -> None:
                nonlocal written
                written += n
                if progress is not None:  # fire and forget: the rows of this shard so far
                    progress.report.remote(shard.file_name, written)
                if die_marker and not os.path.exists(die_marker):  # test hook: die once, mid-shard
                    open(die_marker, "w").close()
                    os._exit(1)

            spec = JobSpec.from_json(spec_json)
            return write_shards(self.gen, spec, [(shard, source)], out_dir, on_rows=on_rows, threads=self.threads)[0]

    return ShardActor


def _progress_actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class Progress:
        """Rows written so far per shard file, as workers report them after each chunk. A shard rerun after a
        worker died reports from zero again; keeping the largest figure per file counts its rows once."""

        def __init__(self):
            self.rows: dict[str, int] = {}

        def report(self, key: str, rows: int) -> None:
            self.rows[key] = max(self.rows.get(key, 0), rows)

        def total(self) -> int:
            return sum(self.rows.values())

    return Progress


@dataclass
class RayEngine:
    """Shards on Ray actors (a local Ray, the one already initialised, or a cluster at ``address``)."""

    name = "ray"
    workers: int | None = None  # actors (None: one per CPU of the cluster)
    address: str | None = None
    die_marker: str | None = None  # tests only: the first actor to start writing dies once

    def describe(self) -> dict:
        return {"name": self.name, "workers": self.workers, "address": self.address}

    def prepare(self) -> None:
        """Initialise Ray unless it already is (then it is left as found); before any file is written."""
        from augment.extras import require

        require("ray", "--engine ray")
        import ray

        self._owned = False
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            check_ray_address(self.address)
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise AugmentError(f"cannot start or reach Ray ({str(err).splitlines()[0]})") from None
        self._owned = True

    def close(self) -> None:
        import ray

        if getattr(self, "_owned", False):
            ray.shutdown()
            self._owned = False

    def run(self, gen, bundle_path: str, spec, items: Iterable[tuple[Shard, object]], out_dir: str, *,
            on_rows: Callable[[int], None], on_shard: Callable[[dict], None], shards: int = 1) -> list[dict]:
        import ray

        t0 = time.perf_counter()
        actors = []
        self.startup_s = None
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            workers = max(1, self.workers or int(cpus))
            share = min(1.0, cpus / workers)
            threads = max(1, int(cpus // workers))
            actor_cls = _shard_actor_class()
            device = getattr(gen, "device", "cpu")
            actors = [actor_cls.options(num_cpus=share).remote(str(bundle_path), threads, device) for _ in range(workers)]
            self.workers = workers
            return self._drive(actors, spec, items, out_dir, on_rows, on_shard, t0)
        except ray.exceptions.RayTaskError as err:  # the shard's own error (not retried): show it as it is
            cause = getattr(err, "cause", None)
            if isinstance(cause, AugmentError):
                raise cause from None
            raise AugmentError(f"a shard failed on a Ray worker: {str(cause or err).splitlines()[0]}") from None
        except ray.exceptions.RayError as err:  # a worker died more often than it may be restarted
            raise AugmentError(f"a Ray worker failed after {RAY_RETRIES} retries: {str(err).splitlines()[0]}") from None
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)

    def _drive(self, actors, spec, items, out_dir, on_rows, on_shard, t0) -> list[dict]:
        import pyarrow as pa
        import ray

        spec_json = spec.to_json()
        in_flight: dict = {}  # object ref -> actor index
        load = [0] * len(actors)
        results: list[dict] = []
        shared_refs: dict[int, object] = {}  # a held source (random draws) is put once, not once per shard
        progress = _progress_actor_class().remote()  # rows per chunk, so the bar moves within shards
        shown = 0

        def show(total: int) -> None:
            nonlocal shown
            if total > shown:
                on_rows(total - shown)
                shown = total

        def collect() -> None:
            """Wait up to PROGRESS_POLL_S for a shard to finish; show the rows written meanwhile."""
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=PROGRESS_POLL_S)
            show(ray.get(progress.total.remote()))
            for ref in ready:
                load[in_flight.pop(ref)] -= 1
                result = ray.get(ref)
                if self.startup_s is None:
                    self.startup_s = time.perf_counter() - t0 - result["seconds"]
                results.append(result)
                on_shard(result)

        try:
            for shard, source in items:
                while min(load) >= 2:
                    collect()
                if source is None or isinstance(source, pa.Table):  # nothing, or this shard's slice of a stream
                    ref = None if source is None else ray.put(source)
                else:
                    if id(source) not in shared_refs:
                        shared_refs[id(source)] = ray.put(source)
                    ref = shared_refs[id(source)]
                i = load.index(min(load))
                obj = actors[i].run.remote(spec_json, shard.to_json(), ref, str(out_dir), self.die_marker, progress)
                in_flight[obj] = i
                load[i] += 1
            while in_flight:
                collect()
            show(sum(r["rows"] for r in results))  # the last reports may still be on their way
        finally:
            ray.kill(progress)
        return results


ENGINES: dict[str, type] = {"local": LocalEngine, "ray": RayEngine}


def choose_engine(name: str, *, address: str | None, workers: int | None, threads: int | None = None):
    """Pick the engine. ``auto``: Ray when an address is given or Ray is already up in this process; else this
    machine, in process with one decode lane per core (``--workers N`` for a process pool). Measured on 2 cores
    (benchmarks/bench_generate.py), in-process lanes match a process pool's rows/s without its start-up, and
    Ray's fixed cost of about 5-10 s pays off only on a cluster."""
    if name not in ("auto", *ENGINES):
        raise AugmentError(f"unknown engine {name!r}; allowed: auto, {', '.join(ENGINES)}")
    if name == "auto":
        import sys

        ray_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        if address or ray_up:
            return RayEngine(workers, address)
        return LocalEngine(workers, threads)
    if name == "local":
        if address:
            raise AugmentError("--ray-address needs --engine ray or auto")
        return LocalEngine(workers, threads)
    return RayEngine(workers, address)
