"""The output folder of a job: ``_job.json`` while it runs, ``_manifest.json`` when (and only when) it is done.

```
synth/bank/
  class=0000-part=00000.parquet ...   data files, each renamed into place when complete
  .tmp-...                            a shard being written (hidden: dataset readers skip it)
  _job.json                           written first: the spec, the bundle sha256 and the plan (for --resume)
  _manifest.json                      written last: files with rows and sha256, rows per class, timings
```
A folder without ``_manifest.json`` is an unfinished job, never a result. ``--resume`` reruns the same spec on
the same bundle, keeps every planned file whose Parquet footer holds the planned rows and schema, and
regenerates the rest; the rows are the same bytes either way because each shard's stream is its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from augment import __version__
from augment.errors import AugmentError, OutputExistsError
from augment.batch.plan import Shard
from augment.batch.write import TMP_PREFIX, sha256_file

__all__ = ["MANIFEST", "JOB_FILE", "FORMAT", "prepare_out_dir", "write_json_atomic", "check_job_file",
           "verified_shards", "remove_temporaries", "read_manifest"]

MANIFEST = "_manifest.json"
JOB_FILE = "_job.json"
FORMAT = "augment-generate/1"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(out: str | os.PathLike) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AugmentError(f"{path} is unreadable or not JSON ({err}); use --overwrite to start over") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("bundle"), dict):
        raise AugmentError(f"{path} is not an augment manifest; use --overwrite to start over")
    return manifest


def _ours(out: Path) -> bool:
    """An empty folder, or one an earlier job wrote (so --overwrite may delete it)."""
    return not any(out.iterdir()) or (out / MANIFEST).exists() or (out / JOB_FILE).exists()


def prepare_out_dir(out: str | os.PathLike, *, overwrite: bool, resume: bool, dry_run: bool = False) -> bool:
    """Check (and with ``dry_run`` False, create or clear) the output folder; True when resuming a job."""
    out = Path(out)
    if overwrite and resume:
        raise AugmentError("--overwrite and --resume exclude each other: pick one")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {str(out)!r} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        if not dry_run:
            out.mkdir(parents=True, exist_ok=True)
        return False
    if resume:
        if not (out / JOB_FILE).exists() and not (out / MANIFEST).exists():
            raise AugmentError(f"--resume: {str(out)!r} holds no unfinished augment job ({JOB_FILE} is missing)")
        return True
    if not overwrite:
        raise OutputExistsError(f"output folder {str(out)!r} exists: pass --overwrite to replace it or --resume to finish it")
    if not _ours(out):
        raise OutputExistsError(f"--overwrite refused: {str(out)!r} is not an augment output folder "
                                f"(no {MANIFEST} or {JOB_FILE}); remove it yourself or choose another --out")
    if not dry_run:
        shutil.rmtree(out)
        out.mkdir(parents=True)
    return False


def check_job_file(out: Path, job: dict) -> None:
    """--resume: the folder's job must be this one (same spec, same bundle), or its files mean something else."""
    try:
        before = json.loads((out / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AugmentError(f"--resume: cannot read {out / JOB_FILE} ({err}); use --overwrite to start over") from None
    if not isinstance(before, dict) or not isinstance(before.get("spec"), dict):
        raise AugmentError(f"--resume: {out / JOB_FILE} is not an augment job file; use --overwrite to start over")
    for key, flag in (("provider", "--device"), ("augment_version", "augment")):
        # the same seed gives the same bytes on one provider and one version only: a mix would be two datasets
        if before.get(key) != job.get(key):
            raise AugmentError(f"--resume: {str(out)!r} was started with {key.replace('_', ' ')} {before.get(key)!r}, "
                               f"this run has {job.get(key)!r}; rerun with the same {flag}, or use --overwrite")
    for key in ("bundle_sha256", "spec"):
        if before.get(key) != job.get(key):
            if key == "spec":
                diff = sorted(k for k in set(before["spec"]) | set(job["spec"])
                              if before["spec"].get(k) != job["spec"].get(k))
                what = ", ".join(f"{k} {before['spec'].get(k)!r} -> {job['spec'].get(k)!r}" for k in diff[:3])
            else:
                what = "a different bundle"
            raise AugmentError(f"--resume: {str(out)!r} holds a different job ({what}); "
                               "rerun with its options or use --overwrite")


def verified_shards(out: Path, shards: list[Shard], schema: pa.Schema, label: str | None) -> dict[str, dict]:
    """Planned files already complete: footer readable, planned rows and schema. Others are deleted."""
    from augment.batch.write import label_counts

    done: dict[str, dict] = {}
    for shard in shards:
        path = out / shard.file_name
        if not path.exists():
            continue
        try:
            meta = pq.read_metadata(path)
            ok = meta.num_rows == shard.rows and meta.schema.to_arrow_schema().equals(schema, check_metadata=False)
        except (pa.ArrowException, OSError):
            ok = False
        if not ok:  # keep_consistent perturb files may hold fewer rows: those shards are simply redone
            path.unlink()
            continue
        counts = label_counts(pq.read_table(path, columns=[label]), label) if label else {"None": shard.rows}
        done[shard.file_name] = {"file": shard.file_name, "rows": meta.num_rows, "bytes": path.stat().st_size,
                                 "sha256": sha256_file(path), "rows_per_class": counts, "drawn": None,
                                 "seconds": 0.0, "shard": shard.to_json(), "resumed": True}
    return done


def remove_temporaries(out: Path) -> None:
    for p in out.glob(f"{TMP_PREFIX}*"):
        p.unlink(missing_ok=True)


def _share_kept(files: list[dict]) -> dict:
    """Rows kept of rows decoded, over the shards decoded by this run: a shard kept by --resume has no count of
    the rows drawn for it (dividing all rows by this run's draws once reported "kept 171%")."""
    decoded = [r for r in files if r.get("drawn") is not None]
    drawn, kept = sum(r["drawn"] for r in decoded), sum(r["rows"] for r in decoded)
    return {"drawn": drawn, "kept": kept, "share_kept": round(kept / drawn, 4) if drawn else None,
            "resumed_rows": sum(r["rows"] for r in files if r.get("drawn") is None)}


def build_manifest(*, job: dict, classes: list, results: list[dict], timings: dict, engine: dict,
                   schema: pa.Schema, extra: dict | None = None) -> dict:
    """The manifest: what was written (files in plan order), how, and from what."""
    order = {r["file"]: i for i, r in enumerate(sorted(results, key=lambda r: (r["shard"]["class_index"], r["shard"]["index"])))}
    files = sorted(results, key=lambda r: order[r["file"]])
    per_class = {str(c): 0 for c in classes}
    for r in files:
        for k, v in r["rows_per_class"].items():
            per_class[k] = per_class.get(k, 0) + v
    rows = sum(r["rows"] for r in files)
    return {
        "format": FORMAT,
        "augment_version": __version__,
        "complete": True,
        "bundle": {"path": job["bundle_path"], "sha256": job["bundle_sha256"]},
        "mode": job["spec"]["mode"],
        "seed": job["spec"]["seed"],
        "options": job["spec"],
        "engine": engine,
        "rows": rows,
        "rows_per_class": [{"class": c, "rows": per_class.get(str(c), 0)} for c in classes],
        "bytes": sum(r["bytes"] for r in files),
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "files": [{"path": r["file"], "rows": r["rows"], "bytes": r["bytes"], "sha256": r["sha256"],
                   "class_index": r["shard"]["class_index"], "shard": r["shard"]["index"],
                   "resumed": bool(r.get("resumed"))} for r in files],
        "keep_consistent": (_share_kept(files) if job["spec"].get("keep_consistent")
                            or job["spec"].get("min_distance") is not None else None),
        "timings": timings,
        **(extra or {}),
    }
