"""Engines run a job's shards: in this process (``local``) or on Ray actors (``ray``), with the same bytes.

Both call ``augment.batch.write.write_shards``: the local engine once for every shard, each Ray actor once per
shard it is handed (``augment.batch.ray_engine``: actors sized from the cluster while the job runs, a lost
node's shards retried on the others).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from augment.batch.plan import Shard
from augment.batch.ray_engine import RayEngine, check_ray_address
from augment.errors import AugmentError
from augment.runtime import blas_single_thread

__all__ = ["ENGINES", "LocalEngine", "RayEngine", "choose_engine", "check_ray_address"]



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

    def capacity(self, shards: int) -> tuple[int, float, float, str]:
        """For the dry run: (workers, speed of each relative to one core, start-up s, in words)."""
        cores = os.cpu_count() or 1
        processes = min(self.workers or 1, max(1, shards)) if _can_spawn() else 1
        lanes = self.threads or max(1, cores // processes)
        speed = 1 + LANE_GAIN * (lanes - 1)
        startup = POOL_STARTUP_S if processes > 1 else 0.0
        return processes, speed, startup, f"{processes} process(es) x {lanes} decode lane(s)"

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
# Measured on 2 cores (benchmarks/bench_generate.py): a second decode lane adds 0.4 of a lane (1M bank rows:
# 416,039 rows/s against 297,500 with --threads 1; it was 0.6 before the decoder and the codec got faster, which
# left the Parquet writer thread a larger share of the second core), and a spawned worker process costs about
# 2 s (imports and the bundle) before its first row.
LANE_GAIN = 0.4
POOL_STARTUP_S = 2.0


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


ENGINES: dict[str, type] = {"local": LocalEngine, "ray": RayEngine}


def choose_engine(name: str, *, address: str | None, workers: int | None, threads: int | None = None,
                  gpus_per_worker: float = 0.0):
    """Pick the engine. ``auto``: Ray when an address is given or Ray is already up in this process; else this
    machine, in process with one decode lane per core (``--workers N`` for a process pool). Measured on 2 cores
    (benchmarks/bench_generate.py), in-process lanes match a process pool's rows/s without its start-up, and
    Ray's fixed cost of about 5-10 s pays off only on a cluster."""
    if name not in ("auto", *ENGINES):
        raise AugmentError(f"unknown engine {name!r}; allowed: auto, {', '.join(ENGINES)}")
    if name == "auto":
        import sys

        ray_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        if address or ray_up or gpus_per_worker:
            return RayEngine(workers, address, gpus_per_worker=gpus_per_worker)
        return LocalEngine(workers, threads)
    if name == "local":
        wrong = [n for n, v in (("--ray-address", address), ("--gpus-per-worker", gpus_per_worker)) if v]
        if wrong:
            raise AugmentError(f"{' and '.join(wrong)} {'needs' if len(wrong) == 1 else 'need'} --engine ray or auto")
        return LocalEngine(workers, threads)
    return RayEngine(workers, address, gpus_per_worker=gpus_per_worker)
