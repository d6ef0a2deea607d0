"""Benchmark of ``augment generate`` (not a test): decoder alone vs end to end, memory, Ray start-up.

    augment train --data ../shared/data/bank_marketing.parquet --label y --out models/bank
    augment train --data ../shared/data/mnist_test.parquet --label label --out models/mnist
    python benchmarks/bench_generate.py --bank models/bank --mnist models/mnist [--out /tmp/bench] [--quick]

Rows printed:
  - onnxruntime decoder alone, best batch (rows/s), for each bundle;
  - ``augment generate`` end to end as a fresh process (start-up included) for 1M bank rows and 200k MNIST
    images: in process (one decode lane per core, and ``--threads 1``), a process pool and Ray: rows/s and the
    ratio to the decoder alone;
  - peak RSS (VmHWM) of the driver and of the largest Ray worker at 1M and 10M bank rows;
  - Ray's fixed cost: a 2-row job on Ray minus the same job in process;
  - rows per CPU-second (driver and its child processes), which a busy machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def decoder_alone(bundle: str, batches=(1024, 4096, 16384, 65536), seconds: float = 1.0) -> tuple[int, float, float]:
    """(best batch, rows/s, rows per CPU-second) of decoder.onnx alone on random inputs, all cores."""
    from augment.bundle import load_bundle
    from augment.runtime import make_session

    b = load_bundle(bundle)
    sess, _ = make_session(b.decoder_path, device="cpu")
    latent, k = b.latent_dim, len(b.classes)
    best = (0, 0.0, 0.0)
    for n in batches:
        z = np.random.default_rng(0).standard_normal((n, latent)).astype(np.float32)
        y = np.eye(k, dtype=np.float32)[np.zeros(n, dtype=np.int64)]
        sess.run(None, {"z": z, "y": y})
        t0, c0, rows = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t0 < seconds:
            sess.run(None, {"z": z, "y": y})
            rows += n
        rate = rows / (time.perf_counter() - t0)
        if rate > best[1]:
            best = (n, rate, rows / max(time.process_time() - c0, 1e-9))
    return best


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker_pids(driver: int) -> list[int]:
    """Ray shard actors, and the driver's own child processes (the local engine's process pool)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"ShardActor" in f.read():
                    pids.append(int(entry))
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == driver:
                    pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def run_generate(args: list[str], out: Path) -> dict:
    """``augment generate ... --out out`` in a fresh process: wall time, CPU time of the process tree (Ray
    workers excepted: they are not its children), peak RSS of the driver and of the largest Ray worker.

    Peak RSS is /proc VmHWM, polled: wait4's ru_maxrss would inherit this process's own high-water mark
    across fork and exec.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "augment.cli", "generate", *args, "--out", str(out), "--quiet"]
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        peak_driver, peak_worker = 0, 0
        watch_workers = "ray" in args or "--workers" in args
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_driver = max(peak_driver, _peak_rss(proc.pid))
            if watch_workers:
                for wpid in _worker_pids(proc.pid):
                    peak_worker = max(peak_worker, _peak_rss(wpid))
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"generate failed ({proc.returncode}): {log.read_text()[-500:]}")
    manifest = json.loads((out / "_manifest.json").read_text())
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rows": manifest["rows"],
            "manifest": manifest, "peak_driver": peak_driver, "peak_worker": peak_worker}


def fmt(n: float) -> str:
    return f"{n:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", required=True, help="bundle trained on bank_marketing.parquet")
    ap.add_argument("--mnist", required=True, help="bundle trained on mnist_test.parquet")
    ap.add_argument("--out", default="/tmp/augment-bench", help="scratch folder (deleted and rewritten)")
    ap.add_argument("--quick", action="store_true", help="100k/20k/1M rows instead of 1M/200k/10M")
    a = ap.parse_args()
    scratch = Path(a.out)
    scratch.mkdir(parents=True, exist_ok=True)
    big, img, huge = (100_000, 20_000, 1_000_000) if a.quick else (1_000_000, 200_000, 10_000_000)
    rows: list[tuple[str, str, str, str]] = []  # (what, rows/s, ratio or note, memory)

    dec, dec_cpu = {}, {}
    for name, path in (("bank", a.bank), ("mnist", a.mnist)):
        batch, rate, cpu_rate = decoder_alone(path)
        dec[name], dec_cpu[name] = rate, cpu_rate
        rows.append((f"decoder.onnx alone, {name} (best batch {batch})", fmt(rate), "1.00", "",
                     f"{fmt(cpu_rate)} (1.00)"))

    def e2e(label: str, name: str, args: list[str], sub: str) -> dict:
        r = run_generate(args, scratch / sub)
        rate = r["rows"] / r["wall_s"]
        gen_rate = r["manifest"]["timings"]["rows_per_s"]
        mem = f"driver {r['peak_driver'] / 2**20:,.0f} MiB" + (
            f", largest worker {r['peak_worker'] / 2**20:,.0f} MiB" if r["peak_worker"] else "")
        cpu_rate = r["rows"] / r["cpu_s"]
        cpu = "" if "ray" in args else f"{fmt(cpu_rate)} ({cpu_rate / dec_cpu[name]:.2f})"
        rows.append((label, f"{fmt(rate)} ({fmt(gen_rate)})", f"{rate / dec[name]:.2f} ({gen_rate / dec[name]:.2f})",
                     mem, cpu))
        shutil.rmtree(scratch / sub, ignore_errors=True)
        return r

    bank = ["--model", a.bank, "--seed", "0"]
    e2e(f"generate {fmt(big)} bank rows, local", "bank", [*bank, "--rows", str(big), "--engine", "local"], "b1")
    e2e(f"generate {fmt(big)} bank rows, local --threads 1", "bank",
        [*bank, "--rows", str(big), "--engine", "local", "--threads", "1"], "b1t")
    e2e(f"generate {fmt(big)} bank rows, local --workers 2", "bank",
        [*bank, "--rows", str(big), "--engine", "local", "--workers", "2"], "b1p")
    e2e(f"generate {fmt(big)} bank rows, ray --workers 2", "bank",
        [*bank, "--rows", str(big), "--engine", "ray", "--workers", "2"], "b2")
    e2e(f"generate {fmt(img)} MNIST images, local", "mnist",
        ["--model", a.mnist, "--rows", str(img), "--engine", "local"], "m1")
    e2e(f"generate {fmt(img)} MNIST images, local --workers 2", "mnist",
        ["--model", a.mnist, "--rows", str(img), "--engine", "local", "--workers", "2"], "m1p")
    e2e(f"generate {fmt(huge)} bank rows, local", "bank", [*bank, "--rows", str(huge), "--engine", "local"], "b3")
    e2e(f"generate {fmt(huge)} bank rows, ray --workers 2", "bank",
        [*bank, "--rows", str(huge), "--engine", "ray", "--workers", "2"], "b4")

    tiny_local = run_generate([*bank, "--per-class", "1", "--engine", "local"], scratch / "t1")["wall_s"]
    tiny_ray = run_generate([*bank, "--per-class", "1", "--engine", "ray"], scratch / "t2")["wall_s"]
    rows.append(("Ray fixed cost (2-row job: ray - local)", "", f"{tiny_ray - tiny_local:.1f} s",
                 f"local {tiny_local:.1f} s, ray {tiny_ray:.1f} s", ""))

    head = ("what", "rows/s, start-up incl. (w/o)", "ratio to decoder", "peak RSS", "rows per CPU-s (ratio)")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, onnxruntime CPU; load average at the end {load[0]:.1f} / {load[1]:.1f}")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("targets: end to end >= 0.5 of the decoder alone at 1M rows; >= 270,000 rows/s for a census-like table "
          "(3x SDV TVAE's ~90k); peak RSS at 10M <= at 1M and < 0.8 GB")


if __name__ == "__main__":
    main()
