"""Request models and the client-error type of the HTTP service (FastAPI renders these into /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from augment.constants import SAMPLERS

__all__ = ["GenerateRequest", "PerturbRequest", "RequestError", "error_body", "SAMPLERS", "MAX_SEED", "Sampler"]

MAX_SEED = 2**63 - 1
Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]  (the tuple of augment.constants)


class GenerateRequest(BaseModel):
    """Rows to generate: ``counts`` per class name, or ``n`` rows of one ``class``."""

    # strict: {"n": "5"} or {"counts": {"yes": "100"}} is refused, not read as a number
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    counts: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="rows per class name (class names as strings, e.g. {\"3\": 100})", examples=[{"yes": 100}]
    )
    n: int | None = Field(default=None, ge=1, description="rows of one class; give `class` too")
    class_: str | int | float | bool | None = Field(default=None, alias="class", description="the class for `n`")
    sampler: Sampler = Field(default="mixture", description="latent sampler: the fitted per-class mixture, or the N(0, T^2 I) prior")
    temperature: float = Field(default=1.0, gt=0, le=100, allow_inf_nan=False, description="scale of the latent and output noise")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="random seed; drawn and returned when omitted")
    provenance: bool = Field(default=False, description="add the augment_* provenance columns (mode, source rows)")
    where: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=32, examples=[["age >= 60", "job in retired|management"]],
        description="conditions every row meets (augment generate --where): COLUMN OP VALUE, COLUMN in A|B|C, "
                    "COLUMN is [not] null; counts stay exact")

    @model_validator(mode="after")
    def _one_way_of_counting(self) -> "GenerateRequest":
        if self.counts is not None and (self.n is not None or self.class_ is not None):
            raise ValueError("give either counts, or n and class, not both")
        if self.counts is None and (self.n is None or self.class_ is None):
            raise ValueError("give counts ({\"<class>\": rows, ...}), or n and class")
        if self.counts is not None and sum(self.counts.values()) < 1:
            raise ValueError("counts ask for no rows; ask for at least one")
        return self


class PerturbRequest(BaseModel):
    """Real rows to perturb (JSON body). A Parquet or Arrow body sends the same options as query parameters."""

    model_config = ConfigDict(extra="forbid", strict=True)

    rows: list[dict[str, Any]] = Field(min_length=1, description="row objects with the bundle's columns, label included")
    per_example: int = Field(default=1, ge=1, description="perturbed rows per source row")
    noise: float = Field(default=1.0, ge=0, le=100, allow_inf_nan=False, description="noise in units of the posterior's spread")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="random seed; drawn and returned when omitted")
    provenance: bool = Field(default=False, description="add the augment_* provenance columns (augment_source_row ...)")


class RequestError(Exception):
    """A client error with a status and the field it concerns; rendered like FastAPI's validation errors."""

    def __init__(self, status: int, loc: list, msg: str, type_: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.loc, self.msg, self.type, self.headers = status, loc, msg, type_, headers


def error_body(loc: list, msg: str, type_: str) -> dict:
    return {"detail": [{"loc": loc, "msg": msg, "type": type_}]}
