"""The bundle: one folder, ``bundle.json`` + ``encoder.onnx`` + ``decoder.onnx``, and nothing that runs code.

``load_bundle`` verifies each ONNX file against the sha256 recorded in ``bundle.json`` and refuses a newer
format. ``write_bundle`` (used by training) writes the folder under a temporary name and renames it into
place, so a failed export never leaves a half-written bundle behind.
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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder. ``json`` is the parsed ``bundle.json``; ``sha256`` identifies the bundle."""

    path: Path
    json: dict = field(repr=False)
    sha256: str

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


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle folder; a ``BundleError`` names what is wrong and with which file."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {str(root)!r} (expected a folder written by `augment train`)")
    missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
    if missing:
        raise BundleError(f"bundle {str(root)!r} lacks {', '.join(missing)} (a bundle holds {', '.join(BUNDLE_FILES)})")
    raw = (root / "bundle.json").read_bytes()
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"bundle {str(root)!r}: bundle.json is not valid JSON ({exc})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise BundleError(f"bundle {str(root)!r}: bundle.json has no integer format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {str(root)!r} has format_version {version}; this augment {__version__} reads up to "
            f"{FORMAT_VERSION} (upgrade augment)"
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise BundleError(f"bundle {str(root)!r}: bundle.json lacks {key!r} (or it is not a {kind.__name__}); "
                              f"the file was edited or written by another tool")
    for key, inner in _REQUIRED_INNER.items():
        for name, kind in inner.items():
            if not isinstance(meta[key].get(name), kind):
                raise BundleError(f"bundle {str(root)!r}: bundle.json lacks {key}.{name} (or it is of the wrong type); "
                                  f"the file was edited or written by another tool")
    recorded = meta["onnx"]["files"]
    for name in ONNX_FILES:
        actual = sha256_file(root / name)
        if recorded.get(name) != actual:
            raise BundleError(
                f"bundle {str(root)!r}: {name} fails its checksum (sha256 {actual[:12]}..., bundle.json records "
                f"{str(recorded.get(name))[:12]}...); the file was changed or truncated"
            )
    digest = hashlib.sha256(raw).hexdigest()
    return Bundle(path=root, json=meta, sha256=digest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    # Durable before the rename that commits it: a crash after the rename must not leave empty files.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bundle(out: str | os.PathLike, meta: dict, onnx_files: dict[str, bytes | str | os.PathLike], *,
                 overwrite: bool = False) -> Bundle:
    """Write ``meta`` as bundle.json plus the ONNX files into ``out`` atomically; returns the loaded bundle.

    ``onnx_files`` maps each of encoder.onnx / decoder.onnx to its bytes or a path to copy. The checksums and
    format version are filled in here.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output folder {str(out)!r} exists (pass --overwrite to replace it)")
    if set(onnx_files) != set(ONNX_FILES):
        raise ValueError(f"write_bundle needs exactly {ONNX_FILES}, got {sorted(onnx_files)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files = {}
        for name, src in onnx_files.items():
            if isinstance(src, (bytes, bytearray)):
                (tmp / name).write_bytes(src)
            else:
                shutil.copyfile(src, tmp / name)
            files[name] = sha256_file(tmp / name)
        meta = {**meta, "format_version": FORMAT_VERSION, "augment_version": __version__}
        meta["onnx"] = {**meta.get("onnx", {}), "files": files}
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        # mkdtemp makes the folder 0700: give it the permissions a plain mkdir would, so another user (the
        # image's uid 1000, a team folder) can read the bundle.
        os.chmod(tmp, 0o777 & ~_umask())
        for name in BUNDLE_FILES:
            _fsync(tmp / name)
        _fsync(tmp)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"output {str(out)!r} exists and is not a folder")
        old = None
        if out.exists():  # move the old bundle aside first, so a failure never leaves neither
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "bundle")
        os.replace(tmp, out)
        _fsync(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
