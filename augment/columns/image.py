"""The image codec: pixels / scale in [0, 1], decoded through a sigmoid back to the input's dtype and encoding.

A decoder's Bernoulli means are blurred where it is unsure of a stroke's place: soft edges, faint grey where
real images are black (MNIST: 67% exact zeros in generated pixels against 81% in real ones). Training fits an
intensity calibration (training/calibrate.py): a monotone map per channel, stored as quantile knots, that carries
the pixel values of generated images to the training images' pixel histogram of that channel. It is a marginal
over all pixels of all images, so it holds nothing about any one image; bundles without it decode the plain
sigmoid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from augment import io as aio
from augment.columns.types import sigmoid, type_from_str, type_to_str
from augment.errors import SchemaError

__all__ = ["ImageColumn", "CALIBRATION_LEVELS", "MAX_KNOTS"]

CALIBRATION_LEVELS = 4096  # the calibration is applied as a table over [0, 1] in steps of 1/4095 (uint8 needs 1/255)
MAX_KNOTS = 4097


@dataclass
class ImageColumn:
    """Pixels / scale in [0, 1]; out = C*H*W logits, inverse sigmoid * scale in the input dtype and encoding."""

    name: str
    type_str: str
    shape: tuple[int, int, int]
    scale: float  # 255 for uint8 (and PNG), else the largest training value
    has_nulls: bool = False
    # per channel, (source, target) quantile knots in [0, 1]: sigmoid outputs -> calibrated values (None: the plain sigmoid)
    calibration: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] | None = None
    kind = "image"

    def parts(self) -> list[tuple]:
        return [("", "image", self.in_dim, self.out_dim, False, 0)]

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def in_dim(self) -> int:
        return int(np.prod(self.shape))

    out_dim = in_dim

    def _pixel_dtype(self) -> np.dtype:
        t = self.arrow_type
        return np.dtype(np.uint8) if aio.image_encoding(t) == "png" else np.dtype(t.value_type.to_pandas_dtype())

    @classmethod
    def fit(cls, name: str, arr: pa.Array, shape: tuple[int, int, int]) -> "ImageColumn":
        pixels = aio.image_to_array(arr, shape, name=name)
        if pixels.dtype == np.uint8:
            scale = 255.0
        else:
            top = float(pixels.max()) if pixels.size else 0.0
            scale = top if top > 0 else 1.0
        return cls(name, type_to_str(arr.type), tuple(int(s) for s in shape), scale)

    def transform(self, arr: pa.Array, rng: np.random.Generator | None = None) -> np.ndarray:
        pixels = aio.image_to_array(arr, self.shape, name=self.name)
        return np.clip(pixels.astype(np.float32) / np.float32(self.scale), 0.0, 1.0)

    @functools.cached_property
    def _levels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibration as one float32 table of C * CALIBRATION_LEVELS entries (channel c's map over [0, 1] at
        c * CALIBRATION_LEVELS) and each output's offset into it (C*H*W, channel-first), or None."""
        if self.calibration is None:
            return None
        grid = np.linspace(0.0, 1.0, CALIBRATION_LEVELS)
        tables = []
        for src, dst in self.calibration:
            src, first = np.unique(np.asarray(src, np.float64), return_index=True)  # equal knots keep their first target
            tables.append(np.interp(grid, src, np.asarray(dst, np.float64)[first]))
        c, h, w = self.shape
        offsets = np.repeat(np.arange(c, dtype=np.int32) * CALIBRATION_LEVELS, h * w)
        return np.concatenate(tables).astype(np.float32), offsets

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (n, C*H*W) in [0, 1] -> calibrated values in [0, 1] (``p`` itself without a calibration)."""
        if self._levels is None:
            return p
        table, offsets = self._levels
        index = (p * np.float32(CALIBRATION_LEVELS - 1) + np.float32(0.5)).astype(np.int32)
        if len(self.calibration) > 1:
            index += offsets
        return table[index]

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        x = self.calibrate(sigmoid(params.astype(np.float32))) * np.float32(self.scale)
        dtype = self._pixel_dtype()
        if np.issubdtype(dtype, np.integer):
            x = np.clip(np.rint(x), 0, np.iinfo(dtype).max)
        return aio.array_to_image_column(x.astype(dtype), self.arrow_type, self.shape)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "type": self.type_str, "shape": list(self.shape), "scale": self.scale,
               "encoding": aio.image_encoding(self.arrow_type), "has_nulls": False}
        if self.calibration is not None:
            out["calibration"] = [{"source": [round(float(v), 7) for v in src], "target": [round(float(v), 7) for v in dst]}
                                  for src, dst in self.calibration]
        return out

    @classmethod
    def from_json(cls, d: dict) -> "ImageColumn":
        shape = tuple(int(s) for s in d["shape"])
        return cls(d["name"], d["type"], shape, float(d["scale"]),
                   calibration=_calibration_from_json(d["name"], d.get("calibration"), shape[0]))


def _calibration_from_json(name: str, d, channels: int):
    """Knots read from bundle.json, checked: one {source, target} per channel, two equally long lists of
    2..MAX_KNOTS finite values in [0, 1], each non-decreasing (a map that reversed or left [0, 1] would be a
    damaged or hostile bundle)."""
    if d is None:
        return None
    maps = []
    for entry in d if isinstance(d, list) and len(d) == channels else [None]:
        try:
            src, dst = (np.asarray(entry[k], dtype=np.float64) for k in ("source", "target"))
        except (KeyError, TypeError, ValueError):
            src = dst = np.zeros(0)
        ok = (src.ndim == 1 and src.shape == dst.shape and 2 <= len(src) <= MAX_KNOTS
              and bool(np.all(np.isfinite(src)) and np.all(np.isfinite(dst)))
              and bool(np.all((src >= 0) & (src <= 1) & (dst >= 0) & (dst <= 1)))
              and bool(np.all(np.diff(src) >= 0) and np.all(np.diff(dst) >= 0)))
        if not ok:
            raise SchemaError(f"image column {name!r}: its calibration must hold, for each of its {channels} channel(s), "
                              f"source and target lists of 2 to {MAX_KNOTS} non-decreasing values in [0, 1] of equal "
                              "length; the bundle was edited or damaged")
        maps.append((tuple(map(float, src)), tuple(map(float, dst))))
    return tuple(maps)
