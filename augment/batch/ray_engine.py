"""The Ray engine: shards on Ray actors, sized from the cluster while the job runs, retried when a node is lost.

Every actor loads the bundle once and writes the shards it is handed to the output (a folder every node sees,
or a bucket). The driver keeps at most two shards in flight per actor, so neither driver nor worker memory
grows with the rows of a job, and it sizes the pool from the cluster's CPUs as they are *now*: every
``RESIZE_S`` it reads ``ray.cluster_resources()`` and starts actors for CPUs that joined (an autoscaler's node,
a RayJob's ``maxReplicas``), so a job that starts on one node spreads to the next as it comes up. An actor that
dies (its process, or its whole node) is not restarted by Ray: the driver puts its shards back at the front of
the queue, where any live actor takes them, and starts a replacement only where the cluster still has the
CPUs. A retried shard rewrites the same bytes (its random stream is its own) under a new temporary name, so
the result does not depend on which node wrote what; each file's node is recorded in the manifest. Paths reach
the workers absolute and the driver's storage settings (``AWS_*``) go with them, so every node writes to the
same bucket (``s3://...``) or a folder every node sees.

Actors ask for ``cpus_per_worker`` CPUs (default: 1, or the share that fits when ``--workers`` asks for more
actors than CPUs: two ``num_cpus=1`` actors on a 2-CPU node beside a driver would not fit) and
``gpus_per_worker`` GPUs; an actor with a GPU runs onnxruntime's CUDA provider.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from augment.batch.plan import Shard
from augment.errors import AugmentError
from augment.fs import storage_env

__all__ = ["RayEngine", "RAY_RETRIES", "check_ray_address"]

RAY_RETRIES = 3  # times one shard may be lost with its actor before the job gives up
PROGRESS_POLL_S = 0.25  # how often the driver asks Ray workers how many rows they have written
RESIZE_S = 1.0  # how often the driver looks for CPUs that joined the cluster
IN_FLIGHT_PER_ACTOR = 2
STARTUP_WAIT_S = 30.0
# Driver connect + actors placed + bundle loaded, before the first row (benchmarks/bench_scale.py measures it:
# 2.2-2.8 s on a quiet 2-core machine, 8 s at load 17).
RAY_STARTUP_S = 3.0
NO_WORKER_S = 300.0  # shards wait and no actor has come up for this long: give up (--resume finishes)


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

    # No Ray restarts: a lost actor's shards are retried by the driver on the actors that are left.
    @ray.remote(max_restarts=0, max_task_retries=0)
    class ShardActor:
        """Loads the bundle once; writes the shards it is handed."""

        def __init__(self, bundle_path: str, threads: int, device: str):
            from augment.runtime import blas_single_thread
            from augment.generator import Generator

            blas_single_thread()  # for the life of the actor (Ray sets OMP_NUM_THREADS only for whole CPUs)
            self.threads, self.gen, self.error = threads, None, None
            self.node = ray.util.get_node_ip_address()
            try:
                self.gen = Generator.from_path(bundle_path, threads=threads, device=device)
            except AugmentError as err:  # deterministic: another actor would fail the same way, so report it
                self.error = err

        def where(self) -> dict:
            if self.error is not None:
                raise self.error
            return {"node": self.node, "provider": self.gen.provider}

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

            if self.error is not None:
                raise self.error
            spec = JobSpec.from_json(spec_json)
            result = write_shards(self.gen, spec, [(shard, source)], out_dir, on_rows=on_rows, threads=self.threads)[0]
            return {**result, "node": self.node}

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


def _progress_actor():
    """The progress actor, on the driver's node (soft): it lives as long as the driver, not a worker node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return _progress_actor_class().options(scheduling_strategy=here).remote()


@dataclass
class _Actor:
    handle: object
    ready_ref: object  # where() of the actor: it answers once the actor is placed and has loaded the bundle
    ready: bool = False
    in_flight: int = 0


@dataclass
class _Pool:
    """The actors of one job: started as the cluster's CPUs allow, replaced (where they fit) when lost.

    An actor gets work only once it is placed and has loaded the bundle: one started for CPUs that have just
    gone (a node lost before the cluster noticed) waits unplaced and is never handed a shard.
    """

    make: Callable[[], object]
    fixed: int | None  # --workers: exactly this many (replacing the lost); None: as many as the CPUs allow
    cpus: float  # CPUs per actor
    gpus: float
    actors: list[_Actor] = field(default_factory=list)
    started: int = 0
    lost: int = 0
    nodes: set = field(default_factory=set)
    providers: set = field(default_factory=set)
    _checked: float = -1e9

    def target(self) -> int:
        import ray

        if self.fixed is not None:
            return self.fixed
        res = ray.cluster_resources()
        fits = [int(res.get("CPU", 0.0) / self.cpus + 1e-9) if self.cpus > 0 else 1 << 30]
        if self.gpus > 0:
            fits.append(int(res.get("GPU", 0.0) / self.gpus + 1e-9))
        return max(1, min(fits))

    def resize(self, force: bool = False) -> None:
        """Start actors up to the target (read from the cluster at most every RESIZE_S)."""
        now = time.perf_counter()
        if not force and now - self._checked < RESIZE_S:
            return
        self._checked = now
        for _ in range(self.target() - len(self.actors)):
            handle = self.make()
            self.actors.append(_Actor(handle, handle.where.remote()))
            self.started += 1

    def poll_ready(self, timeout: float) -> None:
        """Mark the actors that have come up; an actor that died starting (its node lost) is dropped."""
        import ray

        waiting = {a.ready_ref: a for a in self.actors if not a.ready}
        if not waiting:
            return
        done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=timeout)
        for ref in done:
            actor = waiting[ref]
            try:
                where = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the bundle failed to load: no other node does better
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, AugmentError) else
                       AugmentError(f"a Ray worker failed to start: {str(err).splitlines()[0]}")) from None
            except ray.exceptions.RayActorError as err:
                cause = getattr(err, "cause", None) or getattr(err, "creation_task_error", None)
                if isinstance(cause, AugmentError):  # the bundle itself: no other node will do better
                    raise cause from None
                self.drop(actor)
                if self.lost > RAY_RETRIES + max(1, self.started - self.lost):
                    raise AugmentError(f"Ray workers keep failing to start: {str(err).splitlines()[0]}") from None
                continue
            actor.ready = True
            self.nodes.add(where["node"])
            self.providers.add(where["provider"])

    def free(self) -> _Actor | None:
        ready = [a for a in self.actors if a.ready]
        best = min(ready, key=lambda a: a.in_flight, default=None)
        return best if best is not None and best.in_flight < IN_FLIGHT_PER_ACTOR else None

    def drop(self, actor: _Actor) -> None:
        import ray

        if actor in self.actors:
            self.actors.remove(actor)
            self.lost += 1
        ray.kill(actor.handle, no_restart=True)

    def kill_all(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a.handle, no_restart=True)
        self.actors.clear()


@dataclass
class RayEngine:
    """Shards on Ray actors (a local Ray, the one already initialised, or a cluster at ``address``)."""

    name = "ray"
    workers: int | None = None  # actors (None: as many as the cluster's CPUs allow, re-read while running)
    address: str | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    die_marker: str | None = None  # tests only: the first actor to start writing dies once

    def describe(self) -> dict:
        d = {"name": self.name, "workers": self.workers, "address": self.address}
        for key in ("gpus_per_worker", "actors_started", "actors_lost", "retried_shards", "nodes", "providers"):
            if getattr(self, key, None):
                d[key] = getattr(self, key)
        return d

    def prepare(self) -> None:
        """Initialise Ray unless it already is (then it is left as found); before any file is written."""
        from augment.extras import require

        require("ray", "--engine ray")
        import ray

        self._owned = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if self.address:
                check_ray_address(self.address)
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise AugmentError(f"cannot start or reach Ray ({str(err).splitlines()[0]})") from None
            self._owned = True
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if self.gpus_per_worker > gpus:
            self.close()
            raise AugmentError(f"--gpus-per-worker {self.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)")

    def capacity(self, shards: int) -> tuple[int, float, float, str]:
        """For the dry run: (actors the cluster fits now, speed of each relative to one core, start-up s, words).

        Connects to the cluster to read its CPUs; nothing is started on it."""
        import ray

        self.prepare()
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        finally:
            self.close()
        share, threads = self._shape(cpus)
        actors = self.workers or max(1, int(cpus / share + 1e-9))
        return (min(actors, max(1, shards)), float(threads), RAY_STARTUP_S,
                f"{min(actors, shards)} Ray actor(s) on {nodes} node(s), {cpus:g} CPUs")

    def close(self) -> None:
        import ray

        if getattr(self, "_owned", False):
            ray.shutdown()
            self._owned = False

    def _shape(self, cluster_cpus: float) -> tuple[float, int]:
        """(CPUs per actor, onnxruntime threads per actor)."""
        if self.cpus_per_worker is not None:
            share = float(self.cpus_per_worker)
        elif self.workers:
            share = min(1.0, cluster_cpus / self.workers)
        else:
            share = 1.0 if cluster_cpus >= 1 else max(cluster_cpus, 0.01)
        threads = max(1, int(cluster_cpus // self.workers)) if self.workers and self.cpus_per_worker is None \
            else max(1, int(share))
        return share, threads

    def run(self, gen, bundle_path: str, spec, items: Iterable[tuple[Shard, object]], out_dir: str, *,
            on_rows: Callable[[int], None], on_shard: Callable[[dict], None], shards: int = 1) -> list[dict]:
        import ray

        t0 = time.perf_counter()
        self.startup_s = None
        share, threads = self._shape(float(ray.cluster_resources().get("CPU", 1.0)))
        # An actor with GPUs of its own runs CUDA; else the driver's provider (``generate --device``, CPU by
        # default), so every shard's bytes come from the same one.
        device = "cuda" if self.gpus_per_worker > 0 else getattr(gen, "device", "cpu")
        options = {"num_cpus": share, "num_gpus": self.gpus_per_worker or None}
        env = storage_env()
        if env:  # workers reach the same buckets as the driver (nodes elsewhere lack its environment)
            options["runtime_env"] = {"env_vars": env}
        actor_cls = _shard_actor_class().options(**options)
        pool = _Pool(lambda: actor_cls.remote(str(bundle_path), threads, device), self.workers, share,
                     self.gpus_per_worker)
        try:
            return self._drive(pool, spec, items, out_dir, on_rows, on_shard, t0)
        except ray.exceptions.RayTaskError as err:  # the shard's own error (not retried): show it as it is
            cause = getattr(err, "cause", None)
            if isinstance(cause, AugmentError):
                raise cause from None
            raise AugmentError(f"a shard failed on a Ray worker: {str(cause or err).splitlines()[0]}") from None
        finally:
            self.workers = self.workers or max(1, pool.started - pool.lost)
            self.actors_started, self.actors_lost = pool.started, pool.lost
            self.providers = sorted(pool.providers)
            pool.kill_all()

    def _drive(self, pool: _Pool, spec, items, out_dir, on_rows, on_shard, t0) -> list[dict]:
        import pyarrow as pa
        import ray

        spec_json = spec.to_json()
        in_flight: dict = {}  # object ref -> (actor, shard, source)
        retry: deque = deque()  # (shard, source) of shards lost with their actor: first in line
        tries: dict[str, int] = {}
        results: list[dict] = []
        shared_refs: dict[int, object] = {}  # a held source (random draws) is put once, not once per shard
        progress = _progress_actor()  # rows per chunk, so the bar moves within shards
        shown = 0
        pending = iter(items)
        exhausted = False
        idle_since = None
        self.retried_shards = 0

        def show(total: int) -> None:
            nonlocal shown
            if total > shown:
                on_rows(total - shown)
                shown = total

        def source_ref(source):
            if source is None or isinstance(source, pa.Table):  # nothing, or this shard's slice of a stream
                return None if source is None else ray.put(source)
            if id(source) not in shared_refs:
                shared_refs[id(source)] = ray.put(source)
            return shared_refs[id(source)]

        def next_item():
            nonlocal exhausted
            if retry:
                return retry.popleft()
            if exhausted:
                return None
            item = next(pending, None)
            exhausted = item is None
            return item

        def collect() -> None:
            """Wait up to PROGRESS_POLL_S for a shard to finish; show the rows written meanwhile."""
            nonlocal progress
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=PROGRESS_POLL_S)
            if progress is not None:
                try:
                    show(ray.get(progress.total.remote()))
                except ray.exceptions.RayActorError:  # lost with a node: the bar moves per shard from here
                    progress = None
            for ref in ready:
                actor, shard, source = in_flight.pop(ref)
                actor.in_flight -= 1
                try:
                    result = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.NodeDiedError) as err:
                    self._lost(pool, actor, shard, source, retry, tries, err)
                    continue
                if self.startup_s is None:
                    self.startup_s = time.perf_counter() - t0 - result["seconds"]
                results.append(result)
                on_shard(result)
                if progress is None:
                    show(sum(r["rows"] for r in results))

        try:
            # The first shards wait (at most STARTUP_WAIT_S) for the actors the cluster has CPUs for now, so the
            # work spreads over the nodes from the start; actors for nodes that join later take shards as ready.
            pool.resize(force=True)
            pool.poll_ready(STARTUP_WAIT_S)
            while True:
                pool.resize()
                pool.poll_ready(0)
                actor = pool.free()
                item = next_item() if actor is not None else None
                if item is not None:
                    shard, source = item
                    ref = actor.handle.run.remote(spec_json, shard.to_json(), source_ref(source), str(out_dir),
                                                  self.die_marker, progress)
                    in_flight[ref] = (actor, shard, source)
                    actor.in_flight += 1
                    idle_since = None
                    continue
                if in_flight:
                    collect()
                    continue
                if exhausted and not retry:
                    break
                # Shards wait and nothing runs: every actor was lost or is still coming up.
                idle_since = idle_since or time.perf_counter()
                if time.perf_counter() - idle_since > NO_WORKER_S:
                    raise AugmentError(f"no Ray worker came up for {NO_WORKER_S:.0f} s (cluster: "
                                       f"{ray.cluster_resources().get('CPU', 0):g} CPUs); rerun with --resume")
                pool.resize(force=True)
                pool.poll_ready(PROGRESS_POLL_S)
            show(sum(r["rows"] for r in results))  # the last reports may still be on their way
        finally:
            if progress is not None:
                ray.kill(progress)
        self.nodes = sorted(pool.nodes)
        return results

    def _lost(self, pool: _Pool, actor: _Actor, shard: Shard, source, retry: deque, tries: dict, err) -> None:
        """An actor died with ``shard`` in flight: drop it, put the shard first in line, give up after retries."""
        pool.drop(actor)
        tries[shard.file_name] = tries.get(shard.file_name, 0) + 1
        if tries[shard.file_name] > RAY_RETRIES:
            raise AugmentError(f"shard {shard.file_name} was lost with its Ray worker {RAY_RETRIES + 1} times "
                               f"({str(err).splitlines()[0]}); rerun with --resume to finish the job")
        retry.append((shard, source))
        self.retried_shards += 1
