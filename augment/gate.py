"""The clauses of a ``--where`` condition on categorical columns, settled in closed form per latent draw.

Given z the decoder's columns are independent, and a categorical column's value is a draw from the softmax of
its logits. So the chance that a row decoded from z meets the clauses on categorical columns is a product of
softmax masses, p(z) = prod_c sum_{k allowed in c} softmax(logits_c(z) / T)_k, computed without drawing a value;
and given that it does, each such column's value is a draw from its softmax restricted to the allowed values.
Drawing "accept z with probability p(z), then the values from the restricted softmaxes" gives the same rows in
law as "draw the values, keep the row if they meet the clauses", but:

- the values are drawn for the accepted draws alone;
- a proposal that knows an upper bound M >= p(z) over a region of the latent space can accept with p(z) / M
  there and draw that region M times as often (an envelope; ``augment.batch.where``), which rejection on the
  drawn values cannot do: where the best z makes a category 10% likely, 9 in 10 draws are wasted.

The allowed values of a column are found by evaluating its clauses on the column's categories themselves (the
codec's dictionary, null last), so every operator of the grammar works on every categorical type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from augment.columns.types import sample_categories
from augment.conditions import Condition

__all__ = ["CategoryGate", "gate_for"]


@dataclass(frozen=True, eq=False)
class _Gated:
    col: object  # CategoricalColumn
    start: int  # its logits in the decoder output: [start, stop)
    stop: int
    allowed: np.ndarray  # (K,) bool: the categories (null last) meeting every clause on the column
    forced: bool = False  # the latent draws answer it (``--condition-on``): drawn from the allowed, never tested


@dataclass(frozen=True, eq=False)
class CategoryGate:
    """The categorical clauses of ``condition`` (``columns``), and the rest of it (``rest``: drawn and tested)."""

    condition: Condition
    gated: tuple[_Gated, ...]
    rest: Condition

    @property
    def columns(self) -> list[str]:
        return [g.col.name for g in self.gated]

    @property
    def tests(self) -> bool:
        """Whether any gated clause is tested (not all forced)."""
        return any(not g.forced for g in self.gated)

    def prob(self, params: np.ndarray, temperature: float) -> np.ndarray:
        """(n,) float64: the chance that a row decoded from these decoder outputs meets the gated clauses."""
        p = np.ones(params.shape[0], np.float64)
        for g in self.gated:
            if g.forced:
                continue
            logits = params[:, g.start:g.stop]
            if temperature == 0:
                p *= g.allowed[np.argmax(logits, axis=1)]
                continue
            x = logits.astype(np.float32) * np.float32(1.0 / temperature)
            x -= x.max(axis=1, keepdims=True)
            np.exp(x, out=x)
            p *= (x @ g.allowed.astype(np.float32)) / x.sum(axis=1)
        return p

    def draw(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> dict[str, pa.Array]:
        """The gated columns' values (forced ones too) from their softmaxes restricted to the allowed values (one
        uniform per row and column, in training order, as the column's own draw)."""
        out = {}
        for g in self.gated:
            logits = np.array(params[:, g.start:g.stop], dtype=np.float32)
            logits[:, ~g.allowed] = -np.inf
            out[g.col.name] = g.col.build(sample_categories(logits, rng.random(params.shape[0]), temperature))
        return out


def gate_for(codec, condition: Condition, forced=()) -> CategoryGate | None:
    """The gate of ``condition``'s clauses on categorical columns of ``codec`` (None when it has none);
    ``forced`` columns are drawn from their allowed values without a test (their p(z) counts as 1)."""
    columns = {col.name: col for col in codec.columns}
    gated, rest = [], []
    on = {}
    for clause in condition.clauses:
        col = columns.get(clause.column)
        if col is not None and col.kind == "categorical":
            on.setdefault(clause.column, []).append(clause)
        else:
            rest.append(clause)
    for name in [c.name for c in codec.columns if c.name in on]:  # training order
        col, part = columns[name], codec.output_slice(name)
        values = col.build(np.arange(col.out_dim))  # every category, null last
        allowed = Condition(tuple(on[name])).mask(pa.table({name: values}))
        gated.append(_Gated(col, part.start, part.stop, np.asarray(allowed, dtype=bool), name in forced))
    if not gated:
        return None
    return CategoryGate(condition, tuple(gated), Condition(tuple(rest)))
