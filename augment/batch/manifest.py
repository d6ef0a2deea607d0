"""The output folder of a job: ``_job.json`` while it runs, ``_manifest.json`` when (and only when) it is done.

```
synth/bank/                           (a local folder or a bucket prefix: s3://synth/bank)
  class=0000-part=00000.parquet ...   data files, each committed whole (augment.fs.commit)
  .tmp-...                            a shard being written on local disk (hidden: dataset readers skip it)
  _job.json                           written first: the spec, the bundle sha256 and the plan (for --resume)
  _shards/<file>.json                 each committed file's rows and sha256 (removed with _job.json at the end)
  _manifest.json                      written last: files with rows and sha256, rows per class, timings
```
A folder without ``_manifest.json`` is an unfinished job, never a result. ``--resume`` reruns the same spec on
the same bundle, keeps every planned file whose sha256 matches its record in ``_shards/`` and whose Parquet
footer holds the planned rows and schema, and regenerates the rest; the rows are the same bytes either way
because each shard's stream is its own. On a bucket ``--resume`` reads what the bucket holds.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from augment import __version__
from augment.errors import AugmentError, OutputExistsError, StorageError
from augment.batch.plan import Shard
from augment.batch.write import RESULTS_DIR, TMP_PREFIX
from augment.fs import Location, one_line, resolve

__all__ = ["MANIFEST", "JOB_FILE", "FORMAT", "prepare_out_dir", "write_json_atomic", "check_job_file",
           "verified_shards", "remove_temporaries", "read_manifest", "finish", "abandon"]

MANIFEST = "_manifest.json"
JOB_FILE = "_job.json"
FORMAT = "augment-generate/1"


def write_json_atomic(path: Location, data: dict) -> None:
    path.write_bytes((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_manifest(out: str | os.PathLike | Location) -> dict | None:
    path = resolve(out).join(MANIFEST)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise AugmentError(f"cannot read {path.uri} ({one_line(err)}); use --overwrite to start over") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("bundle"), dict):
        raise AugmentError(f"{path.uri} is not an augment manifest; use --overwrite to start over")
    return manifest


def _ours(names: list[str]) -> bool:
    """An empty folder, or one an earlier job wrote (so --overwrite may delete it)."""
    return not names or MANIFEST in names or JOB_FILE in names


def prepare_out_dir(out: str | os.PathLike | Location, *, overwrite: bool, resume: bool, dry_run: bool = False) -> bool:
    """Check (and with ``dry_run`` False, create or clear) the output folder; True when resuming a job."""
    out = resolve(out)
    if overwrite and resume:
        raise AugmentError("--overwrite and --resume exclude each other: pick one")
    out.check_reachable()  # a missing or refused bucket: one line now, nothing written
    if out.is_file():
        raise OutputExistsError(f"output {out.uri!r} exists and is not a folder")
    names = out.list()
    if not names:
        if not dry_run:
            out.mkdir()
        return False
    if resume:
        if JOB_FILE not in names and MANIFEST not in names:
            raise AugmentError(f"--resume: {out.uri!r} holds no unfinished augment job ({JOB_FILE} is missing)")
        return True
    if not overwrite:
        raise OutputExistsError(f"output folder {out.uri!r} exists: pass --overwrite to replace it or --resume to finish it")
    if not _ours(names):
        raise OutputExistsError(f"--overwrite refused: {out.uri!r} is not an augment output folder "
                                f"(no {MANIFEST} or {JOB_FILE}); remove it yourself or choose another --out")
    if not dry_run:
        out.delete_dir()
        out.mkdir()
    return False


def check_job_file(out: Location, job: dict) -> None:
    """--resume: the folder's job must be this one (same spec, same bundle), or its files mean something else."""
    try:
        before = json.loads(out.join(JOB_FILE).read_text())
        if not isinstance(before, dict) or not isinstance(before.get("spec"), dict):
            raise ValueError("not an augment job file")
    except (OSError, ValueError, StorageError) as err:
        raise AugmentError(f"--resume: cannot read {out.join(JOB_FILE).uri} ({one_line(err)}); "
                           "use --overwrite to start over") from None
    for key, flag in (("provider", "--device"), ("augment_version", "augment")):
        # the same seed gives the same bytes on one provider and one version only: a mix would be two datasets
        if before.get(key) != job.get(key):
            raise AugmentError(f"--resume: {out.uri!r} was started with {key.replace('_', ' ')} {before.get(key)!r}, "
                               f"this run has {job.get(key)!r}; rerun with the same {flag}, or use --overwrite")
    for key in ("bundle_sha256", "spec"):
        if before.get(key) != job.get(key):
            if key == "spec":
                diff = sorted(k for k in set(before["spec"]) | set(job["spec"])
                              if before["spec"].get(k) != job["spec"].get(k))
                what = ", ".join(f"{k} {before['spec'].get(k)!r} -> {job['spec'].get(k)!r}" for k in diff[:3])
            else:
                what = "a different bundle"
            raise AugmentError(f"--resume: {out.uri!r} holds a different job ({what}); "
                               "rerun with its options or use --overwrite")


def _record(out: Location, name: str) -> dict | None:
    try:
        rec = json.loads(out.join(RESULTS_DIR, f"{name}.json").read_text())
    except (FileNotFoundError, ValueError, StorageError):
        return None
    return rec if isinstance(rec, dict) else None


def _kept(out: Location, shard: Shard, schema: pa.Schema) -> dict | None:
    """The recorded result of a complete planned file: sha256 as recorded, footer with the planned rows and
    schema. None for anything else (a torn, changed or unrecorded file)."""
    path = out.join(shard.file_name)
    rec = _record(out, shard.file_name)
    if rec is None or rec.get("shard") != shard.to_json():
        return None
    try:
        if path.sha256() != rec.get("sha256"):
            return None
        with path.open_input() as f:
            meta = pq.read_metadata(f)
        if meta.num_rows != rec.get("rows") or not meta.schema.to_arrow_schema().equals(schema, check_metadata=False):
            return None
    except (pa.ArrowException, OSError, StorageError):
        return None
    return {**rec, "seconds": 0.0, "resumed": True}  # keeps its recorded rows drawn (--keep-consistent)


def verified_shards(out: Location, shards: list[Shard], schema: pa.Schema, label: str | None) -> dict[str, dict]:
    """Planned files already complete and unchanged since they were written (see ``_kept``); others are deleted."""
    present = set(out.list())
    done: dict[str, dict] = {}
    for shard in shards:
        if shard.file_name not in present:
            continue
        kept = _kept(out, shard, schema)
        if kept is None:
            out.join(shard.file_name).delete()
            out.join(RESULTS_DIR, f"{shard.file_name}.json").delete()
            continue
        done[shard.file_name] = kept
    return done


def remove_temporaries(out: Location) -> None:
    for name in out.list():
        if name.startswith(TMP_PREFIX):
            out.join(name).delete()


def finish(out: Location, manifest: dict) -> None:
    """The manifest last: from then on the folder is a result; the job's bookkeeping goes."""
    write_json_atomic(out.join(MANIFEST), manifest)
    out.join(JOB_FILE).delete()
    out.join(RESULTS_DIR).delete_dir()


def abandon(out: Location, created: bool) -> None:
    """A job that failed before committing any file: remove its _job.json (and the folder, if this job made it),
    so the next run starts clean. Once a file is committed (by any worker) everything stays for --resume."""
    if any(not n.startswith(("_", ".")) for n in out.list()):
        return
    out.join(JOB_FILE).delete()
    out.join(RESULTS_DIR).delete_dir()
    remove_temporaries(out)
    if created and out.is_local and not out.list():
        out.local_path.rmdir()


def _share_kept(files: list[dict]) -> dict:
    """Rows kept of rows decoded, over the shards whose draws are known: a shard kept by --resume brings the
    count recorded when it was written (_shards/); one without a record is left out of the share (dividing all
    rows by this run's draws once reported "kept 171%")."""
    decoded = [r for r in files if r.get("drawn") is not None]
    drawn, kept = sum(r["drawn"] for r in decoded), sum(r["rows"] for r in decoded)
    return {"drawn": drawn, "kept": kept, "share_kept": round(kept / drawn, 4) if drawn else None,
            "resumed_rows": sum(r["rows"] for r in files if r.get("resumed"))}


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
                   "resumed": bool(r.get("resumed")), **({"node": r["node"]} if r.get("node") else {})}
                  for r in files],
        "keep_consistent": (_share_kept(files) if job["spec"].get("keep_consistent")
                            or job["spec"].get("min_distance") is not None else None),
        "timings": timings,
        **(extra or {}),
    }
