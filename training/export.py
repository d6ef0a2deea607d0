"""Export the encoder and decoder to ONNX (dynamic batch, named inputs and outputs) and check parity.

The default exporter of torch 2.x (``dynamo=True``) is used with ``dynamic_shapes`` and
``external_data=False``, so each graph is one self-contained file. Parity with torch is measured on a real
batch with onnxruntime; export fails loudly when the largest absolute difference exceeds ``PARITY_TOL``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np
import onnxruntime as ort
import torch

from augment.errors import AugmentError
from training.model import DecoderExport, EncoderExport

__all__ = ["export_onnx", "PARITY_TOL", "OPSET"]

PARITY_TOL = 1e-4
OPSET = 18


@contextlib.contextmanager
def _quiet():
    """The exporter logs warnings about optional packages (torchvision) and prints progress; keep them off."""
    logger = logging.getLogger("torch.onnx")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)


def _export(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=inputs, output_names=outputs, opset_version=OPSET,
            dynamic_shapes={name: {0: batch} for name in inputs}, external_data=False, verbose=False,
        )
    return program.model_proto.SerializeToString()


def _max_diff(onnx_bytes: bytes, feeds: dict[str, np.ndarray], expected: list[np.ndarray]) -> float:
    """The largest absolute difference; infinite when either side holds a NaN or an infinity (``nan > tol`` is
    False, so a NaN difference would otherwise pass the parity check)."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    if not all(np.isfinite(a).all() for a in [*got, *expected]):
        return math.inf
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected)))


def export_onnx(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[bytes, bytes, dict]:
    """(encoder bytes, decoder bytes, parity report) for a trained model; x, y: a real batch (float32)."""
    model = model.cpu().eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        mu, logvar = model.encode(xt, yt)
        params = model.decode(mu, yt)
    bad = [name for name, t in (("mu", mu), ("logvar", logvar), ("params", params)) if not torch.isfinite(t).all()]
    if bad:
        raise AugmentError(f"the trained model gives non-finite outputs ({', '.join(bad)} hold NaN or infinity on real "
                           "rows); the bundle was not written. Lower --lr, or look for extreme values in the data")
    enc = _export(EncoderExport(model), (xt, yt), ["x", "y"], ["mu", "logvar"])
    dec = _export(DecoderExport(model), (mu, yt), ["z", "y"], ["params"])
    enc_diff = _max_diff(enc, {"x": x, "y": y}, [mu.numpy(), logvar.numpy()])
    dec_diff = _max_diff(dec, {"z": mu.numpy(), "y": y}, [params.numpy()])
    report = {"encoder_max_abs_diff": enc_diff, "decoder_max_abs_diff": dec_diff, "rows": int(x.shape[0]), "tolerance": PARITY_TOL}
    if max(enc_diff, dec_diff) > PARITY_TOL:
        raise AugmentError(
            f"ONNX export parity check failed: max abs difference encoder {enc_diff:.3g}, decoder {dec_diff:.3g} "
            f"(allowed {PARITY_TOL:g}); the bundle was not written"
        )
    return enc, dec, report
