"""Settings of the HTTP service, defined once: fields, defaults, bounds and help, and the one place that reads
the environment.

``augment serve`` builds its click options from these fields (``serving/cli.py``) and the Ray Serve builder
its typed ``args`` (``serving/ray_app.py``), so a new setting is added here and nowhere else. Each field's
``metadata`` carries its help text and bounds (``min``; ``min_open`` for a strict bound) and, where the flag
is not ``--<name-with-dashes>``, its ``flag``.

    ServeSettings: what one process of the service needs (it travels to each Ray replica as JSON).
    DeploySettings: how the processes run (shutdown grace; with Ray, replicas and their CPUs).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from augment.errors import AugmentError

__all__ = ["ServeSettings", "DeploySettings", "read_api_key", "setting_fields", "check_exposure", "DEFAULT_MAX_ROWS",
           "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_RESPONSE_BYTES"]

DEFAULT_MAX_ROWS = 100_000  # rows one request may ask for (generate: sum of counts; perturb: rows * per_example)
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # request bodies (perturb uploads) larger than this get 413
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # an MNIST bundle's 100,000-row JSON response is about 1 GB
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _opt(help: str, **meta: Any) -> dict:
    return {"help": help, **meta}


@dataclass(frozen=True)
class ServeSettings:
    """What one process of the service needs to know (see each field's help)."""

    model: str = field(metadata=_opt("Bundle folder, or its URI (s3://, gs://, file://): loaded once per replica.", kind="dir"))
    max_rows: int = field(default=DEFAULT_MAX_ROWS, metadata=_opt("Rows one request may ask for (413 beyond).", min=1))
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata=_opt("Largest request body (413 beyond).", min=1))
    max_response_bytes: int = field(default=DEFAULT_MAX_RESPONSE_BYTES, metadata=_opt(
        "Largest response body, estimated before generating (413 beyond; Parquet and Arrow are about 5x smaller "
        "than JSON).", min=1))
    max_queue: int = field(default=32, metadata=_opt(
        "Requests waiting for an inference slot, beyond --max-concurrent (503 with Retry-After beyond).", min=0))
    request_timeout: float = field(default=60.0, metadata=_opt(
        "Seconds a request may take to send its body and reach an inference slot (408 / 503 beyond).",
        min=0.0, min_open=True))
    api_key_env: str | None = field(default=None, metadata=_opt(
        "Environment variable holding the API key (401 without it). Required beyond loopback unless --no-auth.",
        metavar="NAME"))
    no_auth: bool = field(default=False, metadata=_opt(
        "Serve without an API key on a non-loopback --host (by default that is refused)."))
    threads: int | None = field(default=None, metadata=_opt(
        "onnxruntime threads per session (default: cores / --max-concurrent; with --ray: the replica's CPUs).", min=1))
    max_concurrent: int = field(default=2, metadata=_opt("Inference calls at once per process.", min=1))

    def __post_init__(self) -> None:
        if not str(self.model):
            raise ValueError("model must name a bundle folder")
        for f in setting_fields(type(self)):
            value, low = getattr(self, f.name), f.metadata.get("min")
            if low is not None and value is not None and value < low:
                raise ValueError(f"{f.name} must be >= {low}, got {value}")
        if self.api_key_env is not None and not self.api_key_env.strip():
            raise ValueError("api_key_env must be an environment variable name or None")

    def to_json(self) -> dict:
        return asdict(self)

    def session_threads(self) -> int:
        """Threads per onnxruntime session: concurrent requests, not intra-op threads, fill the cores.

        Measured on 2 busy cores (10,000 bank rows): 1 thread 93 ms, 2 threads 180 ms; onnxruntime's
        spinning intra-op threads lose badly to other work on the same cores.
        """
        if self.threads is not None:
            return int(self.threads)
        return max(1, (os.cpu_count() or 1) // self.max_concurrent)


@dataclass(frozen=True)
class DeploySettings:
    """How the service's processes run: on uvicorn one process, on Ray Serve ``replicas`` of them."""

    graceful_timeout: float = field(default=30.0, metadata=_opt(
        "Seconds to let requests in flight finish on shutdown.", min=0.0))
    replicas: int | None = field(default=None, metadata=_opt(
        "With --ray: a fixed number of replicas (default 1; in a Serve config: its autoscaling).", min=1))
    replica_cpus: float = field(default=1.0, metadata=_opt("With --ray: CPUs per replica.", min=0.0, min_open=True))


def setting_fields(cls: type) -> tuple:
    """The dataclass fields of a settings class (``ServeSettings`` or ``DeploySettings``), in order."""
    return fields(cls)


def check_exposure(settings: ServeSettings, host: str | None) -> None:
    """Refuse to serve without a key beyond loopback unless the operator said so (``no_auth``).

    ``host`` None means "not known here" (a Ray Serve config: its proxies listen on every node), which counts
    as beyond loopback.
    """
    if settings.api_key_env is None and not settings.no_auth and host not in LOOPBACK:
        where = f"--host {host}" if host is not None else "a Ray Serve application"
        raise AugmentError(
            f"{where} is reachable beyond this machine and no API key is set: pass --api-key-env NAME "
            "(api_key_env in a Serve config), or --no-auth (no_auth: true) to serve without one on purpose"
        )
    if settings.api_key_env is not None and settings.no_auth:
        raise AugmentError("--api-key-env and --no-auth contradict each other: give one of them")


def read_api_key(settings: ServeSettings) -> bytes | None:
    """The API key from the environment variable that ``settings.api_key_env`` names (None when unset).

    A named but unset or empty variable is an error: serving without the key the operator asked for would
    leave the service open by accident.
    """
    if settings.api_key_env is None:
        return None
    value = os.environ.get(settings.api_key_env, "")
    if not value:
        raise AugmentError(
            f"--api-key-env {settings.api_key_env}: that environment variable is unset or empty; "
            "set it to the API key, or drop --api-key-env to serve without one"
        )
    return value.encode("utf-8")
