"""Names shared by every door (CLI, Python API, HTTP): modes, samplers, devices, provenance columns.

Defined once here, a leaf module that imports nothing of augment, so the CLI's choices, the service's
validation and the batch spec cannot drift apart.
"""

from __future__ import annotations

__all__ = ["MODES", "SAMPLERS", "DEVICES", "WHERE_PROPOSALS", "PROVENANCE", "PROVENANCE_TYPES"]

MODES = ("sample", "perturb", "interpolate")
SAMPLERS = ("mixture", "prior")
DEVICES = ("auto", "cpu", "cuda")
# --where: latent draws the latent cells (slices of the mixture components) that carry the conditional rows,
# with their prior mass, dropping at most 2% of those rows (a 95% bound), then rejects the rest; reject draws
# from the plain mixture and rejects (the exact conditional, slower). augment.batch.where.
WHERE_PROPOSALS = ("latent", "reject")

# Provenance columns, in output order, with their Arrow type names (pyarrow.<name>()); written only when asked.
PROVENANCE_TYPES = {
    "augment_mode": "string",  # sample, perturb or interpolate
    "augment_source_row": "int64",  # row of the --from source (first source for interpolate); null for sample
    "augment_source_row_b": "int64",  # second source row of an interpolation; null otherwise
    "augment_alpha": "float32",  # position along the interpolation, 0..1; null otherwise
}
PROVENANCE = tuple(PROVENANCE_TYPES)
