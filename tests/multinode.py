"""A real two-node Ray cluster on one machine, for tests: two network namespaces, or two nodes on loopback.

Namespaces (the default, where ``ip netns`` works: CI runs as root) make the nodes separate hosts: each has
its own network stack, its own address and its own Ray ports. A bridge in this namespace joins two veth pairs,
one into each node's namespace, so the nodes reach each other and this process (the test, and an S3 server
listening on the bridge's address) reaches both::

    this namespace: bridge aug<id>br 198.18.<k>.254  (the test, the S3 server)
      +- veth -> namespace aug<id>h: 198.18.<k>.1    Ray head  (--node-ip-address, own --temp-dir)
      +- veth -> namespace aug<id>w: 198.18.<k>.2    Ray worker node (own --temp-dir)

Addresses come from 198.18.0.0/15, the range reserved for network tests (RFC 2544). A driver must run on a
node of the cluster (Ray's drivers talk to a local raylet), so drivers run inside the head's namespace. Ray
2.60 turns token authentication on: the head, the worker node and the drivers get ``RAY_AUTH_MODE=token`` and
the same ``RAY_AUTH_TOKEN`` (made here; nothing is written to ``~/.ray``). Processes are ended by the ids
``ip netns pids`` lists for a namespace, never by a command that matches processes by name (Ray's own stop ends every Ray process on the machine).

Where namespaces cannot be made (not root, no iproute2), ``LoopbackCluster`` starts the two nodes on 127.0.0.1
with their own ports and temp dirs instead, and ``why`` says why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# Fast node-death detection (defaults: 5 failed checks 3 s apart), so a killed node's shards move on quickly.
SYSTEM_CONFIG = '{"health_check_period_ms":500,"health_check_failure_threshold":4,"health_check_timeout_ms":500}'
OBJECT_STORE = str(100 * 1024 * 1024)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    mode = "?"
    why = ""

    def __init__(self, cpus: int = 1):
        self.cpus = cpus
        self.token = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix=f"aug{os.getpid() % 100000}-"))  # short: Ray's socket paths
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        self.env.pop("RAY_ADDRESS", None)

    # -- nodes -------------------------------------------------------------------------------------------
    def _start(self, prefix: list[str], args: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        return subprocess.Popen([*prefix, RAY, "start", "--block", "--disable-usage-stats", *args],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def wait_started(self, name: str, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
        """Until `ray start` of node ``name`` says it is up (after the node registered with the GCS); False if
        it exited first (on a loaded machine a raylet may miss Ray's fixed 30 s registration window: then the
        node is started again, up to 3 times)."""
        log = self.root / f"{name}.log"
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.mode} cluster: node {name} not up in {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.2)
        return True

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.root.glob("*.log")))

    # -- drivers -----------------------------------------------------------------------------------------
    def driver(self, args: list[str], **kw) -> subprocess.Popen:
        """A driver process (``augment ...``) on the head node, with the cluster's token."""
        return subprocess.Popen([*self.driver_prefix, sys.executable, "-m", "augment.cli", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    def augment(self, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
        proc = self.driver(args)
        out, _ = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


class NamespaceCluster(_Cluster):
    mode = "namespaces"

    def __init__(self, cpus: int = 1):
        super().__init__(cpus)
        tag = f"aug{os.getpid() % 100000}"
        self.ns_head, self.ns_worker, self.bridge = f"{tag}h", f"{tag}w", f"{tag}br"
        k = os.getpid() % 250 + 1
        self.host_ip, self.head_ip, self.worker_ip = f"198.18.{k}.254", f"198.18.{k}.1", f"198.18.{k}.2"
        self.address = f"{self.head_ip}:6379"  # a namespace of its own: the default port is free there
        self.driver_prefix = ["ip", "netns", "exec", self.ns_head]
        self._made: list[tuple[str, ...]] = []
        try:
            self._network()
        except BaseException:
            self.close()
            raise

    def _network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made.append(("ip", "link", "del", self.bridge))
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for ns, ip in ((self.ns_head, self.head_ip), (self.ns_worker, self.worker_ip)):
            _run("ip", "netns", "add", ns)
            self._made.append(("ip", "netns", "del", ns))
            inside, outside = f"{ns}i", f"{ns}o"
            _run("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            self._made.append(("ip", "link", "del", outside))  # deleting one end deletes the pair
            _run("ip", "link", "set", inside, "netns", ns)
            _run("ip", "link", "set", outside, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", inside)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", inside, "up")

    def start_head(self) -> subprocess.Popen:
        return self._start(["ip", "netns", "exec", self.ns_head],
                    ["--head", f"--node-ip-address={self.head_ip}", "--port=6379", f"--num-cpus={self.cpus}",
                     f"--temp-dir={self.root / 'h'}", "--include-dashboard=false",
                     f"--object-store-memory={OBJECT_STORE}", f"--system-config={SYSTEM_CONFIG}"], "head")

    def start_worker(self) -> subprocess.Popen:
        return self._start(["ip", "netns", "exec", self.ns_worker],
                    [f"--address={self.address}", f"--node-ip-address={self.worker_ip}", f"--num-cpus={self.cpus}",
                     f"--temp-dir={self.root / 'w'}", f"--object-store-memory={OBJECT_STORE}"], "worker")

    def kill_worker(self) -> None:
        _kill_namespace(self.ns_worker)

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of every process of each node (its namespace), MiB."""
        return {name: _rss_mib(_run("ip", "netns", "pids", ns, check=False).stdout.split())
                for name, ns in (("head", self.ns_head), ("worker", self.ns_worker))}

    stop_worker = kill_worker

    def stop_head(self) -> None:
        _kill_namespace(self.ns_head)

    def close(self) -> None:
        for ns in (self.ns_worker, self.ns_head):
            _kill_namespace(ns)
        for cmd in reversed(self._made):
            _run(*cmd, check=False)
        self._made.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _rss_mib(pids: list[str]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in network namespace ``ns`` (as a lost machine would stop), by their own ids."""
    for _ in range(20):
        r = _run("ip", "netns", "pids", ns, check=False)
        pids = [int(p) for p in r.stdout.split()] if r.returncode == 0 else []
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


class LoopbackCluster(_Cluster):
    """Two Ray nodes on 127.0.0.1 (own ports and temp dirs): the fallback where namespaces cannot be made."""

    mode = "loopback"

    def __init__(self, cpus: int = 1, why: str = ""):
        super().__init__(cpus)
        self.why = why
        self.host_ip = self.head_ip = self.worker_ip = "127.0.0.1"
        self.address = f"127.0.0.1:{_free_port()}"
        self.driver_prefix = []
        self._procs: dict[str, subprocess.Popen] = {}

    def _ports(self) -> list[str]:
        return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
                f"--min-worker-port={_free_port() // 2 * 2}", "--max-worker-port=0",
                f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                f"--runtime-env-agent-port={_free_port()}"]

    def start_head(self) -> subprocess.Popen:
        port = self.address.rsplit(":", 1)[1]
        self._procs["head"] = proc = self._start([], ["--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                               f"--num-cpus={self.cpus}", f"--temp-dir={self.root / 'h'}",
                                               "--include-dashboard=false", f"--object-store-memory={OBJECT_STORE}",
                                               f"--system-config={SYSTEM_CONFIG}", *self._ports()], "head")
        return proc

    def start_worker(self) -> subprocess.Popen:
        self._procs["worker"] = proc = self._start([], [f"--address={self.address}", "--node-ip-address=127.0.0.1",
                                                 f"--num-cpus={self.cpus}", f"--temp-dir={self.root / 'w'}",
                                                 f"--object-store-memory={OBJECT_STORE}", *self._ports()], "worker")
        return proc

    def kill_worker(self) -> None:
        _kill_group(self._procs.pop("worker", None))

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each node's process group (the session its `ray start` leads), MiB."""
        out = {}
        for name, proc in self._procs.items():
            r = _run("pgrep", "-s", str(proc.pid), check=False)
            out[name] = _rss_mib(r.stdout.split())
        return out

    stop_worker = kill_worker

    def stop_head(self) -> None:
        _kill_group(self._procs.pop("head", None))

    def close(self) -> None:
        for name in ("worker", "head"):
            _kill_group(self._procs.pop(name, None))
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_group(proc: subprocess.Popen | None) -> None:
    """The node's `ray start --block` and what it started share one session (its process group) we made."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def namespaces_unavailable() -> str:
    """Why network namespaces cannot be used here ('' when they can)."""
    if os.geteuid() != 0:
        return "not root: `ip netns add` needs CAP_SYS_ADMIN"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian package iproute2)"
    probe = f"aug{os.getpid() % 100000}p"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return ""


def start_cluster(cpus: int = 1, nodes: int = 2) -> _Cluster:
    """Head and (``nodes`` 2) worker node up (namespaces where possible, else loopback, saying why)."""
    why = namespaces_unavailable()
    cluster = NamespaceCluster(cpus) if not why else LoopbackCluster(cpus, why)
    try:
        for name in ("head", "worker")[:nodes]:
            for attempt in range(3):
                if cluster.wait_started(name, getattr(cluster, f"start_{name}")()):
                    break
                if attempt == 2:
                    raise RuntimeError(f"{cluster.mode} cluster: node {name} did not start\n{cluster.logs()}")
                getattr(cluster, f"stop_{name}")()
    except BaseException:
        cluster.close()
        raise
    return cluster
