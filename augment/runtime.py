"""onnxruntime sessions: the execution provider chosen from what the session reports, threads set per worker.

onnxruntime-gpu lists the CUDA provider as available even on a machine without CUDA, and logs load errors
when asked for it. We ask quietly (logger severity FATAL while the session is built) and then read
``session.get_providers()`` to learn what we actually got.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnxruntime as ort

__all__ = ["make_session", "SessionInfo", "blas_single_thread"]

from augment.constants import DEVICES as _DEVICES  # noqa: E402


@dataclass(frozen=True)
class SessionInfo:
    provider: str  # the first provider the session really uses
    threads: int


def _quiet_session(path: str, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    finally:
        ort.set_default_logger_severity(3)


def make_session(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None
                 ) -> tuple[ort.InferenceSession, SessionInfo]:
    """An inference session on CUDA where it works (device auto|cuda), else CPU, with ``threads`` intra-op."""
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {', '.join(_DEVICES)}, got {device!r}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    n = int(threads) if threads else max(1, os.cpu_count() or 1)
    options.intra_op_num_threads = n
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = _quiet_session(str(path), options, providers)
    except Exception:
        if providers == ["CPUExecutionProvider"]:
            raise
        session = _quiet_session(str(path), options, ["CPUExecutionProvider"])
    got = session.get_providers()[0]
    if device == "cuda" and got != "CUDAExecutionProvider":
        from augment.errors import AugmentError

        raise AugmentError(f"device 'cuda' was asked for but onnxruntime could only use {got} (use --device auto|cpu)")
    return session, SessionInfo(provider=got, threads=n)


def blas_single_thread():
    """numpy's BLAS on one thread (a context manager; also applied once per worker process).

    onnxruntime has its own threads; an OpenBLAS pool spinning beside them (the mixture sampler's matmuls)
    halved the rows/s of a process here. Ray workers get OMP_NUM_THREADS=1 from Ray; this does the same for
    the in-process engine and the pool. threadpoolctl comes with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
