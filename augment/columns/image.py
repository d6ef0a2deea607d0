"""The image codec: pixels / scale in [0, 1], decoded through a sigmoid back to the input's dtype and encoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from augment import io as aio
from augment.columns.types import sigmoid, type_from_str, type_to_str

__all__ = ["ImageColumn"]


@dataclass
class ImageColumn:
    """Pixels / scale in [0, 1]; out = C*H*W logits, inverse sigmoid * scale in the input dtype and encoding."""

    name: str
    type_str: str
    shape: tuple[int, int, int]
    scale: float  # 255 for uint8 (and PNG), else the largest training value
    has_nulls: bool = False
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

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        x = sigmoid(params.astype(np.float32)) * np.float32(self.scale)
        dtype = self._pixel_dtype()
        if np.issubdtype(dtype, np.integer):
            x = np.clip(np.rint(x), 0, np.iinfo(dtype).max)
        return aio.array_to_image_column(x.astype(dtype), self.arrow_type, self.shape)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "shape": list(self.shape), "scale": self.scale,
                "encoding": aio.image_encoding(self.arrow_type), "has_nulls": False}

    @classmethod
    def from_json(cls, d: dict) -> "ImageColumn":
        return cls(d["name"], d["type"], tuple(int(s) for s in d["shape"]), float(d["scale"]))
