"""The generator: bundle + codec + latent sampler + onnxruntime sessions -> labeled pyarrow Tables.

The batch job, its Ray workers and the HTTP service all call this class, so one (bundle, rng state, n)
gives the same rows wherever it runs. Random draws are taken from the caller's numpy ``Generator`` in a
fixed order, block by block (``block_rows`` rows at a time, a few decoder batches of ``batch_size``: first the
latent draws, then the output draws), so asking for n rows in chunks that are multiples of ``block_rows``
gives the same bytes as one call.

    gen = Generator.from_path("models/bank")
    table = gen.sample(gen.class_index("yes"), 1000, np.random.default_rng(0))
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from augment import arrays
from augment.bundle import Bundle, load_bundle
from augment.codec import Codec
from augment.constants import PROVENANCE_TYPES, SAMPLERS
from augment.errors import ClassNameError, InputError, SchemaError
from augment.gate import gate_for
from augment.runtime import make_session
from augment.sampler import MixtureSampler, NativeValues, interpolate_latent, perturb_latent, sample_prior

__all__ = ["Generator", "PROVENANCE_FIELDS", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 4096  # rows per decoder call for a table; wide outputs (images) get fewer, see batch_rows
PROVENANCE_FIELDS = [pa.field(name, getattr(pa, type_name)()) for name, type_name in PROVENANCE_TYPES.items()]


def batch_rows(output_dim: int) -> int:
    """Rows per decoder call: 4096 for a table, down to 128 for wide outputs (about 2 MB of decoder output).

    Measured here: an MLP decoder for a 16-column table runs fastest at 1024-4096 rows a call, and the MNIST
    conv decoder at 128-512 (1.2x the rows/s of 4096, and a quarter of the activations' memory).
    """
    rows = (1 << 19) // max(1, int(output_dim))
    return int(min(DEFAULT_BATCH_SIZE, max(128, 1 << max(0, rows.bit_length() - 1))))


BLOCK_BYTES = 8 << 20  # decoder output per random-draw block (float32): about 16k rows of a table


def block_rows(batch: int, output_dim: int) -> int:
    """Rows per block: the unit of ``sample``'s random draws and of the work after the decoder, a multiple
    of the decoder's ``batch`` rows, at most 16 batches and about ``BLOCK_BYTES`` of decoder output.

    The mixture draws, the codec's inverse and the Arrow assembly cost a fixed Python overhead per call
    (per mixture component, per column, per category); a block of several decoder batches pays it once.
    Measured here on a 134-output census-like table: 2,048-row calls spent more time in that overhead than
    in the arithmetic, and two decode lanes contended for the GIL.
    """
    rows = BLOCK_BYTES // (4 * max(1, int(output_dim)))
    return int(batch) * int(min(16, max(1, rows // int(batch))))


class Generator:
    """Loads a bundle once; ``sample``, ``perturb`` and ``interpolate`` return pyarrow Tables."""

    def __init__(self, bundle: Bundle, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None):
        self.bundle = bundle
        self.codec = Codec.from_json(bundle.json["codec"])
        self.batch_size = int(batch_size) if batch_size else batch_rows(self.codec.output_dim)
        self.block_rows = block_rows(self.batch_size, self.codec.output_dim)
        self.schema = bundle.schema
        self.classes = bundle.classes
        self.n_classes = len(self.classes)
        self.latent_dim = bundle.latent_dim
        self.mixture = MixtureSampler.from_json(bundle.json["sampler"]["mixture"], bundle.class_counts)
        self.encoder, info = make_session(bundle.encoder_path, device=device, threads=threads)
        self.decoder, _ = make_session(bundle.decoder_path, device=device, threads=threads)
        self.provider = info.provider
        # "same seed, same bytes" holds on one provider: CPU unless CUDA is asked for (and what was got)
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.threads = info.threads  # onnxruntime intra-op threads of both sessions
        self._rethreaded: dict[int, Generator] = {}
        self.output_schema = pa.schema(list(self.schema) + PROVENANCE_FIELDS)
        self._eye = np.eye(self.n_classes, dtype=np.float32)

    def with_threads(self, threads: int) -> "Generator":
        """This generator with onnxruntime sessions of ``threads`` threads each (bundle and codec shared; made
        once per thread count and kept)."""
        threads = int(threads)
        if threads == self.threads:
            return self
        if threads not in self._rethreaded:
            other = copy.copy(self)
            other.encoder, _ = make_session(self.bundle.encoder_path, device=self.device, threads=threads)
            other.decoder, _ = make_session(self.bundle.decoder_path, device=self.device, threads=threads)
            other.threads, other._rethreaded = threads, {}
            self._rethreaded[threads] = other
        return self._rethreaded[threads]

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs) -> "Generator":
        return cls(load_bundle(path), **kwargs)

    # ----------------------------------------------------------------------------------------- classes
    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes]

    def class_index(self, name) -> int:
        """A class by its value or its name as text (``3`` or ``"3"``); unknown names list the known ones."""
        for i, c in enumerate(self.classes):
            if c == name and type(c) is type(name) or str(c) == str(name):
                return i
        raise ClassNameError(f"unknown class {name!r}; the bundle's classes are: {', '.join(self.class_names)}")

    # ------------------------------------------------------------------------------------------ decode
    def _assemble(self, features: pa.Table, labels: np.ndarray, mode: str, source: np.ndarray | None = None,
                  source_b: np.ndarray | None = None, alpha: np.ndarray | None = None) -> pa.Table:
        n = features.num_rows
        label_col = self.bundle.label_column
        columns = []
        for field in self.schema:
            col = self.codec.label_array(labels) if field.name == label_col else features.column(field.name)
            columns.append(col.cast(field.type) if col.type != field.type else col)
        columns += [
            arrays.constant_string(mode, n),
            arrays.from_numpy(source, pa.int64()) if source is not None else pa.nulls(n, pa.int64()),
            arrays.from_numpy(source_b, pa.int64()) if source_b is not None else pa.nulls(n, pa.int64()),
            arrays.from_numpy(alpha, pa.float32()) if alpha is not None else pa.nulls(n, pa.float32()),
        ]
        return pa.Table.from_arrays(columns, schema=self.output_schema)

    def params(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The decoder's output (n, output_dim) for latent codes z (n, latent) of classes ``labels`` (n,), run
        ``batch_size`` rows at a time."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if len(z) <= self.batch_size:
            return self.decoder.run(None, {"z": z, "y": self._eye[labels]})[0]
        out = np.empty((len(z), self.codec.output_dim), np.float32)
        for i in range(0, len(z), self.batch_size):
            sl = slice(i, i + self.batch_size)
            out[sl] = self.decoder.run(None, {"z": z[sl], "y": self._eye[labels[sl]]})[0]
        return out

    def decode(self, z: np.ndarray, labels: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
               columns=None) -> pa.Table:
        """Feature columns for latent codes z (n, latent) of classes ``labels`` (n,); ``columns``: only those (a
        table of them, drawn as ``Codec.inverse_columns`` does), for work that reads a few columns alone."""
        params = self.params(z, labels)
        if columns is None:
            return self.codec.inverse(params, rng, temperature=temperature)
        return pa.table(self.codec.inverse_columns(params, rng, temperature, columns))

    def encode(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, logvar, class index) of real rows; the table must hold the bundle's columns and label."""
        label_col = self.bundle.label_column
        if label_col is not None and label_col not in table.column_names:
            raise SchemaError(f"source has no label column {label_col!r} (its columns: {', '.join(table.column_names)})")
        missing = [f.name for f in self.schema if f.name not in table.column_names]
        if missing:
            raise SchemaError(f"source lacks the bundle's column(s) {', '.join(map(repr, missing))}")
        x = self.codec.transform(table)
        labels = self.codec.encode_labels(table)
        mus, logvars = [], []
        for i in range(0, len(x), self.batch_size):
            mu, logvar = self.encoder.run(None, {"x": x[i:i + self.batch_size], "y": self._eye[labels[i:i + self.batch_size]]})
            mus.append(mu)
            logvars.append(logvar)
        if not mus:
            return np.zeros((0, self.latent_dim), np.float32), np.zeros((0, self.latent_dim), np.float32), labels
        return np.concatenate(mus), np.concatenate(logvars), labels

    # ---------------------------------------------------------------------------------------- sampling
    def _check(self, class_index: int, sampler: str, temperature: float) -> None:
        if not 0 <= int(class_index) < self.n_classes:
            raise ClassNameError(f"class index {class_index} is out of range 0..{self.n_classes - 1}")
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if not temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {temperature}")

    def _latent(self, class_index: int, m: int, rng: np.random.Generator, sampler: str, temperature: float,
                mixture) -> np.ndarray:
        """``m`` latent draws: from ``mixture`` when given (a conditional proposal), else the chosen sampler."""
        if mixture is not None:
            return mixture.sample(m, rng, temperature)
        if sampler == "mixture":
            return self.mixture.sample(class_index, m, rng, temperature)
        return sample_prior(m, self.latent_dim, rng, temperature)

    def iter_sample(self, class_index: int, n: int, rng: np.random.Generator, *, sampler: str = "mixture",
                    temperature: float = 1.0, mixture=None) -> Iterator[pa.Table]:
        """``sample`` as a stream of tables of at most ``block_rows`` rows (memory stays flat).

        ``mixture``: a ``GaussianMixture`` to draw z from instead of the class's own (a conditional proposal).
        """
        self._check(class_index, sampler, temperature)
        for start in range(0, int(n), self.block_rows):
            m = min(self.block_rows, int(n) - start)
            z = self._latent(class_index, m, rng, sampler, temperature, mixture)
            labels = np.full(m, class_index, dtype=np.int64)
            yield self._assemble(self.decode(z, labels, rng, temperature), labels, "sample")

    def sample(self, class_index: int, n: int, rng: np.random.Generator, *, sampler: str = "mixture",
               temperature: float = 1.0, mixture=None) -> pa.Table:
        """``n`` synthetic rows of one class, label and provenance columns included."""
        parts = list(self.iter_sample(class_index, n, rng, sampler=sampler, temperature=temperature, mixture=mixture))
        return pa.concat_tables(parts) if parts else self.output_schema.empty_table()

    def gate(self, condition, forced: tuple = ()):
        """The ``CategoryGate`` of ``condition``'s clauses on categorical columns (None without any), made once;
        ``forced``: columns whose clauses the latent draws already answer (``native``), drawn without a test."""
        cache = self.__dict__.setdefault("_gates", {})
        key = (condition.texts, tuple(forced))
        if key not in cache:
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = gate_for(self.codec, condition, forced)
        return cache[key]

    def native(self, column: str, class_index: int) -> NativeValues | None:
        """``--condition-on`` mixtures of one column for one class, or None where the bundle has none for it."""
        cache = self.__dict__.setdefault("_native", {})
        key = (column, int(class_index))
        if key not in cache:
            columns = self.bundle.json["sampler"].get("native", {}).get("columns", {})
            cache[key] = NativeValues.from_json(columns[column], int(class_index)) if column in columns else None
        return cache[key]

    def sample_where(self, class_index: int, n: int, rng: np.random.Generator, condition, *, sampler: str = "mixture",
                     temperature: float = 1.0, mixture=None) -> tuple[pa.Table, np.ndarray]:
        """(the rows of ``n`` draws meeting ``condition``, the (n,) mask of which draws did).

        Per block (``block_rows``): z, the decoder, then the condition. Its clauses on categorical columns are
        settled without drawing (``augment.gate``): each z is accepted with the chance p(z) that its row meets
        them, divided by the bound M >= p(z) the proposal ``mixture`` gives for where z was drawn (1 without
        one; ``sample_bounded``), and those columns are then drawn from their allowed values. The other tested
        columns are drawn for the accepted z and tested, and the untested columns only for the rows kept (a
        rejected row costs its decoder row and its tested columns alone). Random draws, block by block: z, one
        uniform per z if there are categorical clauses, the tested columns in training order, the other
        columns in training order.
        """
        self._check(class_index, sampler, temperature)
        forced = tuple(getattr(mixture, "forced", ()))
        gate = self.gate(condition, forced)
        rest = condition if gate is None else gate.rest
        gated = set(gate.columns) if gate is not None else set()
        tested = [c for c in self.codec.column_names if c in set(condition.columns) - gated]
        others = [c for c in self.codec.column_names if c not in set(condition.columns)]
        bounded = getattr(mixture, "sample_bounded", None)
        parts, masks = [], []
        for start in range(0, int(n), self.block_rows):
            m = min(self.block_rows, int(n) - start)
            if bounded is not None:
                z, bound = bounded(m, rng, temperature)
            else:
                z, bound = self._latent(class_index, m, rng, sampler, temperature, mixture), 1.0
            labels = np.full(m, class_index, dtype=np.int64)
            params = self.params(z, labels)
            if gate is not None:
                rows = (np.flatnonzero(rng.random(m) * bound < gate.prob(params, temperature)) if gate.tests
                        else np.arange(m))
                sub = params[rows]
                cols = gate.draw(sub, rng, temperature)  # the gated columns, then the tested ones
                cols.update(self.codec.inverse_columns(sub, rng, temperature, tested))
            else:
                rows, sub = None, params
                cols = self.codec.inverse_columns(params, rng, temperature, tested)
            hit = rest.mask(pa.table(cols)) if rest.clauses else np.ones(sub.shape[0], dtype=bool)
            local = np.flatnonzero(hit)
            keep = local if rows is None else rows[local]
            mask = np.zeros(m, dtype=bool)
            mask[keep] = True
            idx = arrays.from_numpy(local)
            cols = {k: v.take(idx) for k, v in cols.items()}
            cols.update(self.codec.inverse_columns(params[keep], rng, temperature, others))
            features = pa.Table.from_arrays([cols[c] for c in self.codec.column_names], schema=self.codec.feature_schema)
            parts.append(self._assemble(features, labels[keep], "sample"))
            masks.append(mask)
        table = pa.concat_tables(parts) if parts else self.output_schema.empty_table()
        return table, (np.concatenate(masks) if masks else np.zeros(0, dtype=bool))

    def perturb(self, table: pa.Table, per_example: int, noise: float, rng: np.random.Generator, *,
                source_offset: int = 0, temperature: float = 1.0) -> pa.Table:
        """``per_example`` rows around each real row: z = mu + noise * sigma * eps, decoded with its own label."""
        if per_example < 1:
            raise InputError(f"per_example must be >= 1, got {per_example}")
        if not noise >= 0:
            raise InputError(f"noise must be >= 0, got {noise}")
        mu, logvar, labels = self.encode(table)
        parts = []
        step = max(1, self.batch_size // per_example)
        for i in range(0, len(mu), step):
            z = perturb_latent(mu[i:i + step], logvar[i:i + step], per_example, noise, rng)
            lab = np.repeat(labels[i:i + step], per_example)
            src = np.repeat(np.arange(i, min(i + step, len(mu)), dtype=np.int64) + source_offset, per_example)
            parts.append(self._assemble(self.decode(z, lab, rng, temperature), lab, "perturb", source=src))
        return pa.concat_tables(parts) if parts else self.output_schema.empty_table()

    def interpolate(self, table_a: pa.Table, table_b: pa.Table, steps: int, rng: np.random.Generator, *,
                    source_offset: int = 0, source_b: np.ndarray | None = None, temperature: float = 1.0) -> pa.Table:
        """``steps`` rows on the line from each row of ``table_a`` to the same row of ``table_b``.

        Rows are decoded with (and labelled as) the class of their ``a`` row; pair rows of one class for a clean
        class-conditional path. ``source_b`` gives the b rows' indices in the source (default: offset + i).
        """
        if steps < 2:
            raise InputError(f"steps must be >= 2, got {steps}")
        if table_a.num_rows != table_b.num_rows:
            raise InputError(f"interpolation needs as many a rows as b rows, got {table_a.num_rows} and {table_b.num_rows}")
        mu_a, _, labels = self.encode(table_a)
        mu_b, _, _ = self.encode(table_b)
        idx_a = np.arange(len(mu_a), dtype=np.int64) + source_offset
        idx_b = np.asarray(source_b, dtype=np.int64) if source_b is not None else idx_a
        z, alpha = interpolate_latent(mu_a, mu_b, steps)
        lab = np.repeat(labels, steps)
        parts = []
        for i in range(0, len(z), self.batch_size):
            sl = slice(i, i + self.batch_size)
            parts.append(self._assemble(self.decode(z[sl], lab[sl], rng, temperature), lab[sl], "interpolate",
                                        source=np.repeat(idx_a, steps)[sl], source_b=np.repeat(idx_b, steps)[sl],
                                        alpha=alpha[sl]))
        return pa.concat_tables(parts) if parts else self.output_schema.empty_table()

    def classify(self, table: pa.Table) -> np.ndarray:
        """The class the bundle's per-class mixture assigns to each row's encoding (for --keep-consistent)."""
        mu, _, _ = self.encode(table)
        return self.mixture.classify(mu)
