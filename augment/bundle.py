"""The bundle: one folder, ``bundle.json`` + ``encoder.onnx`` + ``decoder.onnx``, and nothing that runs code.

``load_bundle`` verifies each ONNX file against the sha256 recorded in ``bundle.json`` and refuses a newer
format. ``write_bundle`` (used by training) writes the folder under a temporary name and renames it into
place, so a failed export never leaves a half-written bundle behind.

Either may name a bucket (``s3://models/bank``, see ``augment.fs``). A bundle in a bucket is downloaded once
per machine into a cache folder named by the sha256 of its bundle.json (``AUGMENT_CACHE_DIR``, else
``~/.cache/augment``; the newest ``CACHE_KEEP`` bundles are kept) and loaded from there, so every worker and
replica on a machine shares one verified copy. Written to a bucket, the ONNX files go first and bundle.json
last: a bundle without bundle.json is not a bundle, and one with mismatched files fails its checksums.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from augment import __version__
from augment.errors import BundleError, OutputExistsError
from augment.fs import Location, cache_dir, fsync_dir, fsync_file, resolve

__all__ = ["FORMAT_VERSION", "BUNDLE_FILES", "Bundle", "load_bundle", "write_bundle", "sha256_file"]

FORMAT_VERSION = 1
BUNDLE_FILES = ("bundle.json", "encoder.onnx", "decoder.onnx")
ONNX_FILES = ("encoder.onnx", "decoder.onnx")
_REQUIRED = {"modality": str, "arrow_schema": str, "label": dict, "codec": dict, "latent_dim": int, "sampler": dict,
             "onnx": dict}
# keys read inside those objects (a missing one was a KeyError far from the bundle)
_REQUIRED_INNER = {"label": {"column": (str, type(None)), "classes": list, "counts": list},
                   "codec": {"columns": list}, "sampler": {"default": str, "mixture": dict},
                   "onnx": {"opset": int, "files": dict}}


def sha256_file(path: str | os.PathLike) -> str:
    return resolve(path).sha256()


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder. ``json`` is the parsed ``bundle.json``; ``sha256`` identifies the bundle."""

    path: Path  # a local folder (for a bundle in a bucket: its verified copy in the cache)
    json: dict = field(repr=False)
    sha256: str
    source: str = ""  # where it was loaded from, as given to workers: absolute path or URI

    def __post_init__(self):
        if not self.source:
            object.__setattr__(self, "source", str(self.path))

    @property
    def encoder_path(self) -> Path:
        return self.path / "encoder.onnx"

    @property
    def decoder_path(self) -> Path:
        return self.path / "decoder.onnx"

    @property
    def schema(self) -> pa.Schema:
        """The real data's Arrow schema, label column included."""
        return schema_from_b64(self.json["arrow_schema"])

    @property
    def classes(self) -> list:
        return list(self.json["label"]["classes"])

    @property
    def class_counts(self) -> list[int]:
        return [int(c) for c in self.json["label"]["counts"]]

    @property
    def label_column(self) -> str | None:
        return self.json["label"]["column"]

    @property
    def latent_dim(self) -> int:
        return int(self.json["latent_dim"])


CACHE_KEEP = 8  # bundles kept in the download cache (the least recently used beyond that are removed)


def _fetch(loc: Location) -> Path:
    """A bundle in a bucket -> its local copy, downloaded at most once per machine (keyed by content)."""
    if not loc.is_dir():
        raise _not_found(loc.uri)
    _check_files(loc.uri, [name for name in BUNDLE_FILES if not loc.join(name).is_file()])
    raw = loc.join("bundle.json").read_bytes()
    root = cache_dir() / "bundles"
    target = root / hashlib.sha256(raw).hexdigest()
    if (target / "bundle.json").is_file():
        os.utime(target)  # most recently used
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        for name in ONNX_FILES:
            loc.join(name).download(tmp / name)
        (tmp / "bundle.json").write_bytes(raw)  # the bytes hashed above, whatever the bucket holds now
        try:
            os.replace(tmp, target)
        except OSError:  # another worker on this machine got there first: theirs is the same content
            if not (target / "bundle.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _trim_cache(root)
    return target


def _trim_cache(root: Path) -> None:
    folders = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in folders[:-CACHE_KEEP]:
        shutil.rmtree(old, ignore_errors=True)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle folder (a path or a URI); a ``BundleError`` names what is wrong and where."""
    loc = resolve(path)
    if loc.is_local:
        root = loc.local_path
        bundle = _load_local(root, loc.uri)
    else:
        root = _fetch(loc)
        try:
            bundle = _load_local(root, loc.uri)
        except BundleError:  # a cached copy changed on disk since: download it again, once
            shutil.rmtree(root, ignore_errors=True)
            root = _fetch(loc)
            bundle = _load_local(root, loc.uri)
    return Bundle(path=root, json=bundle.json, sha256=bundle.sha256, source=loc.uri)


def _not_found(name: str) -> BundleError:
    return BundleError(f"bundle folder not found: {name!r} (expected a folder written by `augment train`)")


def _check_files(name: str, missing: list[str]) -> None:
    if missing:
        raise BundleError(f"bundle {name!r} lacks {', '.join(missing)} (a bundle holds {', '.join(BUNDLE_FILES)})")


def _load_local(root: Path, name: str) -> Bundle:
    if not root.is_dir():
        raise _not_found(name)
    _check_files(name, [f for f in BUNDLE_FILES if not (root / f).is_file()])
    raw = (root / "bundle.json").read_bytes()
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"bundle {name!r}: bundle.json is not valid JSON ({exc})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise BundleError(f"bundle {name!r}: bundle.json has no integer format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {name!r} has format_version {version}; this augment {__version__} reads up to "
            f"{FORMAT_VERSION} (upgrade augment)"
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise BundleError(f"bundle {name!r}: bundle.json lacks {key!r} (or it is not a {kind.__name__}); "
                              f"the file was edited or written by another tool")
    for key, inner in _REQUIRED_INNER.items():
        for field, kind in inner.items():
            if not isinstance(meta[key].get(field), kind):
                raise BundleError(f"bundle {name!r}: bundle.json lacks {key}.{field} (or it is of the wrong type); "
                                  f"the file was edited or written by another tool")
    recorded = meta["onnx"].get("files", {})
    for f in ONNX_FILES:
        actual = sha256_file(root / f)
        if recorded.get(f) != actual:
            raise BundleError(
                f"bundle {name!r}: {f} fails its checksum (sha256 {actual[:12]}..., bundle.json records "
                f"{str(recorded.get(f))[:12]}...); the file was changed or truncated"
            )
    digest = hashlib.sha256(raw).hexdigest()
    return Bundle(path=root, json=meta, sha256=digest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bundle(out: str | os.PathLike, meta: dict, onnx_files: dict[str, bytes | str | os.PathLike], *,
                 overwrite: bool = False) -> Bundle:
    """Write ``meta`` as bundle.json plus the ONNX files into ``out`` atomically; returns the loaded bundle.

    ``onnx_files`` maps each of encoder.onnx / decoder.onnx to its bytes or a path to copy. The checksums and
    format version are filled in here. ``out`` may be a URI (see the module docstring for the order).
    """
    loc = resolve(out)
    if set(onnx_files) != set(ONNX_FILES):
        raise ValueError(f"write_bundle needs exactly {ONNX_FILES}, got {sorted(onnx_files)}")
    loc.check_reachable()
    if loc.exists() and not overwrite:
        raise OutputExistsError(f"output folder {loc.uri!r} exists (pass --overwrite to replace it)")
    if loc.is_local:
        _write_local(loc.local_path, meta, onnx_files)
    else:
        with tempfile.TemporaryDirectory(prefix=".augment-bundle-") as tmp:
            _fill(Path(tmp), meta, onnx_files)
            loc.join("bundle.json").delete()  # first: from here until the upload ends, no bundle is there
            for name in (*ONNX_FILES, "bundle.json"):
                loc.join(name).write_bytes((Path(tmp) / name).read_bytes())
    return load_bundle(loc.uri)


def _fill(folder: Path, meta: dict, onnx_files: dict[str, bytes | str | os.PathLike]) -> None:
    files = {}
    for name, src in onnx_files.items():
        if isinstance(src, (bytes, bytearray)):
            (folder / name).write_bytes(src)
        else:
            shutil.copyfile(src, folder / name)
        files[name] = sha256_file(folder / name)
    meta = {**meta, "format_version": FORMAT_VERSION, "augment_version": __version__}
    meta["onnx"] = {**meta.get("onnx", {}), "files": files}
    (folder / "bundle.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


def _write_local(out: Path, meta: dict, onnx_files: dict[str, bytes | str | os.PathLike]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _fill(tmp, meta, onnx_files)
        # mkdtemp makes the folder 0700: give it the permissions a plain mkdir would, so another user (the
        # image's uid 1000, a team folder) can read the bundle.
        os.chmod(tmp, 0o777 & ~_umask())
        for name in BUNDLE_FILES:  # durable before the rename that makes it the bundle
            fsync_file(tmp / name)
        fsync_dir(tmp)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"output {str(out)!r} exists and is not a folder")
        old = None
        if out.exists():  # move the old bundle aside first, so a failure never leaves neither
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "bundle")
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
