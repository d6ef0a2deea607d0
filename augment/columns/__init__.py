"""One codec per column kind, used by ``augment.codec.Codec``.

Each has ``fit``, ``in_dim``/``out_dim``, ``parts()`` (its segments: suffix, kind, in, out, nulls, spikes),
``transform(arr, rng) -> (n, in_dim) float32``, ``inverse(params (n, out_dim), rng, temperature) -> pa.Array``
and a JSON round trip. All numpy, vectorized.

- ``numeric``: numbers of any width, decimals, times of day, durations (``numeric.py``);
- ``temporal``: dates and timestamps, with their calendar (``temporal.py``);
- ``categorical``: strings, booleans, dictionaries, low-cardinality integers; rare values protected;
- ``identifier``: generated fresh in the training values' format, never modelled (``identifier.py``);
- ``image``: pixels (``image.py``).
"""

from augment.columns.categorical import MAX_CATEGORIES, RARE_MIN_ROWS, RARE_TOKEN, CategoricalColumn, TooManyCategories
from augment.columns.identifier import IdentifierColumn
from augment.columns.image import ImageColumn
from augment.columns.numeric import MAX_SPIKES, SPECIALS, SPIKE_SHARE, NumericColumn
from augment.columns.temporal import TemporalColumn
from augment.columns.types import sample_categories, type_from_str, type_to_str

__all__ = ["NumericColumn", "CategoricalColumn", "ImageColumn", "TemporalColumn", "IdentifierColumn", "COLUMN_KINDS",
           "type_to_str", "type_from_str", "sample_categories", "RARE_TOKEN", "RARE_MIN_ROWS", "MAX_CATEGORIES",
           "TooManyCategories", "SPECIALS", "SPIKE_SHARE", "MAX_SPIKES"]

COLUMN_KINDS = {c.kind: c for c in (NumericColumn, CategoricalColumn, ImageColumn, TemporalColumn, IdentifierColumn)}
