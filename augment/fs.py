"""Paths and URIs: every ``--data``, ``--model``, ``--out`` ... becomes a ``Location`` (pyarrow filesystem + path).

    loc = resolve("s3://synth/bank-7")          # or "gs://...", "file:///data/x", "data/x" (made absolute)
    loc.join("_manifest.json").write_bytes(b"{...}")
    with commit(loc.join("part-0.parquet")) as tmp:   # write the local file ``tmp``; it appears whole or not at all
        pq.write_table(table, tmp)

Object stores have no rename, so a file is committed by writing it under its final name only when it is
complete: ``commit`` writes a local temporary file and uploads it in one call (``pyarrow.fs.copy_files``, one
C++ call that a Python exception or Ctrl-C cannot cut in the middle), then checks the object's size; a failed
upload leaves no object (an S3 multipart upload is completed only by a successful close). On local disk the
temporary file sits beside its final name and is fsynced, renamed into place and its folder fsynced, so a
crash leaves the old state or the new, never a torn file.

S3 credentials, region and endpoint come from the usual environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``...). Connect and request timeouts and a bounded retry count make an
unreachable or unauthorised bucket a one-line ``StorageError`` within seconds rather than a long hang.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from augment.errors import StorageError

__all__ = ["Location", "resolve", "is_uri", "commit", "storage_env", "cache_dir", "one_line", "fsync_file", "fsync_dir",
           "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
CONNECT_TIMEOUT_S = 3.0  # an endpoint that does not answer fails in seconds (x attempts)
REQUEST_TIMEOUT_S = 60.0  # per request, not per transfer: a slow part upload still succeeds
S3_ATTEMPTS = 3  # the SDK's standard retry strategy: transient errors retried, 403/404 never
_STORAGE_ENV = ("AWS_", "GOOGLE_", "GCS_")  # what Ray workers need to reach the same buckets


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def is_uri(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than a Windows drive letter."""
    s = str(text)
    return "://" in s and len(s.split("://", 1)[0]) > 1


def storage_env() -> dict[str, str]:
    """The environment variables that say how to reach object storage, as set in this process."""
    return {k: v for k, v in os.environ.items() if k.startswith(_STORAGE_ENV)}


def cache_dir() -> Path:
    """Where downloads are kept: ``AUGMENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/augment`` or ``~/.cache/augment``
    (a temporary folder where home is not writable, as in some containers)."""
    env = os.environ.get("AUGMENT_CACHE_DIR")
    if env:
        return Path(env)
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "augment"
    try:
        home.mkdir(parents=True, exist_ok=True)
        return home
    except OSError:
        return Path(tempfile.gettempdir()) / f"augment-cache-{os.getuid()}"


def _endpoint() -> tuple[str | None, str]:
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, "https"
    parsed = urlparse(url if "://" in url else f"https://{url}")
    return parsed.netloc, parsed.scheme or "https"


def _s3() -> pafs.FileSystem:
    endpoint, scheme = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(
        region=region, endpoint_override=endpoint, scheme=scheme, connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        allow_bucket_creation=False, allow_bucket_deletion=False,
        # moto and MinIO answer on one host; path-style addressing needs no DNS per bucket
        force_virtual_addressing=False,
    )


def _local(path: str) -> tuple[pafs.FileSystem, str, str]:
    absolute = os.path.abspath(os.path.expanduser(path))
    return pafs.LocalFileSystem(), absolute, absolute


def _gcs() -> pafs.FileSystem:
    from datetime import timedelta

    # credentials: GOOGLE_APPLICATION_CREDENTIALS or the machine's default account, as gcloud finds them
    return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=CONNECT_TIMEOUT_S * S3_ATTEMPTS))


# object stores built here, with bounded timeouts and retries; other schemes go to pyarrow.fs as they are
_STORES = {"s3": ("s3", _s3), "s3a": ("s3", _s3), "gs": ("gs", _gcs), "gcs": ("gs", _gcs)}


def _from_uri(uri: str) -> tuple[pafs.FileSystem, str, str]:
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return _local(urlparse(uri).path)
    if scheme in _STORES:
        name, make = _STORES[scheme]
        path = rest.strip("/")
        if not path:
            raise StorageError(f"{uri!r} names no bucket: expected {name}://BUCKET/PATH")
        return make(), path, f"{name}://{path}"
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StorageError(f"cannot use {uri!r} ({one_line(err)}); allowed: a local path, file://, s3://, gs:// "
                           "or another URI pyarrow.fs knows") from None
    return fs, path.rstrip("/"), uri.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem. ``uri`` is what users see and what workers are handed: an
    absolute local path or ``scheme://bucket/key``."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def __str__(self) -> str:
        return self.uri

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.uri} is not on the local file system")
        return Path(self.path)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def join(self, *names: str) -> Location:
        tail = "/".join(n.strip("/") for n in names)
        return Location(self.fs, f"{self.path.rstrip('/')}/{tail}", f"{self.uri.rstrip('/')}/{tail}")

    def parent(self) -> Location:
        cut = lambda s: s.rstrip("/").rsplit("/", 1)[0]  # noqa: E731
        return Location(self.fs, cut(self.path), cut(self.uri))

    # --------------------------------------------------------------------------------------- queries
    def _call(self, what: str, fn, *args):
        """Run a filesystem call; storage failures become one line naming the URI."""
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f"cannot {what} {self.uri!r}: {one_line(err)}") from None

    def info(self) -> pafs.FileInfo:
        return self._call("read", self.fs.get_file_info, self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def size(self) -> int:
        return int(self.info().size)

    def list(self) -> list[str]:
        """Names directly inside this folder (empty when it does not exist)."""
        sel = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self._call("list", self.fs.get_file_info, sel))

    def files(self) -> list[str]:
        """Paths (relative to this folder) of every file beneath it, sorted."""
        sel = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        base = len(self.path.rstrip("/")) + 1
        return sorted(i.path[base:] for i in self._call("list", self.fs.get_file_info, sel)
                      if i.type == pafs.FileType.File)

    def check_reachable(self) -> None:
        """Fail in one line, before anything is written, when the bucket is missing or will not answer us."""
        if self.is_local:
            return
        bucket = self.path.split("/", 1)[0]
        info = Location(self.fs, bucket, self.uri).info()
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"bucket {bucket!r} of {self.uri!r} does not exist (or these credentials cannot see it)")

    # ------------------------------------------------------------------------------------ read/write
    def open_input(self):
        return self._call("read", self.fs.open_input_file, self.path)

    def read_bytes(self) -> bytes:
        with self.open_input() as f:
            return self._call("read", f.read)

    def sha256(self, chunk: int = 1 << 20) -> str:
        import hashlib

        h = hashlib.sha256()
        with self.open_input() as f:
            while block := self._call("read", f.read, chunk):
                h.update(block)
        return h.hexdigest()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file at once (atomically where the store allows)."""
        with commit(self) as tmp:
            tmp.write_bytes(data)

    def mkdir(self) -> None:
        if self.is_local:  # object stores have no folders: a prefix exists once a key is under it
            self._call("create", self.fs.create_dir, self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", self.fs.delete_file, self.path)

    def delete_dir(self) -> None:
        if self.exists():
            self._call("delete", self.fs.delete_dir, self.path)

    def download(self, dest: str | os.PathLike) -> None:
        self._call("download", pafs.copy_files, self.path, str(dest), self.fs, pafs.LocalFileSystem())


def resolve(path: str | os.PathLike | Location) -> Location:
    """A path or URI -> Location; local paths become absolute (workers elsewhere do not share our cwd)."""
    if isinstance(path, Location):
        return path
    text = os.fspath(path)
    if not text:
        raise StorageError("an empty path was given")
    fs, inner, uri = _from_uri(text) if is_uri(text) else _local(text)
    return Location(fs, inner, uri)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (POSIX: the folder's entry is data too)."""
    with contextlib.suppress(OSError):  # some file systems refuse to open a folder; nothing more to do there
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def commit(dest: Location) -> Iterator[Path]:
    """Yield a local temporary file; when the block succeeds it becomes ``dest`` whole, else it is removed.

    Local: fsync the file, rename it into place, fsync the folder. Object store: upload in one call, then
    check the stored size (a short object is deleted and reported rather than kept).
    """
    if dest.is_local:
        folder = Path(dest.path).parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{TMP_PREFIX}{Path(dest.path).name}-{uuid.uuid4().hex[:12]}"
    else:
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}augment-", suffix=f"-{dest.name}")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if dest.is_local:
            fsync_file(tmp)
            os.replace(tmp, dest.path)
            fsync_dir(Path(dest.path).parent)
            return
        size = tmp.stat().st_size
        dest._call("write", pafs.copy_files, str(tmp), dest.path, pafs.LocalFileSystem(), dest.fs)
        stored = dest.size()
        if stored != size:
            dest.delete()
            raise StorageError(f"upload of {dest.uri!r} stored {stored} of {size} bytes; removed it")
    finally:
        tmp.unlink(missing_ok=True)
