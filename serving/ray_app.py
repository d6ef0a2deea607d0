"""The same FastAPI app on Ray Serve: one deployment whose replicas each load the bundle once.

A Serve config names the typed builder::

    applications:
      - name: augment
        import_path: serving.ray_app:build_app
        args: {model: /models/bank, max_rows: 100000}

and ``serve run deploy/serve_config.yaml`` validates ``args`` against ``AugmentServeArgs`` before anything
starts. ``augment serve --ray`` calls the same builder. Replicas read the API key from their own
environment (``api_key_env`` names the variable), so the key never travels through Ray's control plane.
"""

# No `from __future__ import annotations` here: Ray Serve reads the builder's parameter annotation as a class
# to validate the config's `args` with, and postponed (string) annotations would hide it.

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from serving.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ROWS, ServeSettings

__all__ = ["AugmentServeArgs", "AugmentDeployment", "build_app", "DEPLOYMENT_NAME"]

DEPLOYMENT_NAME = "augment"


class AugmentServeArgs(BaseModel):
    """The ``args`` of a Serve config that names ``serving.ray_app:build_app``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="bundle folder, as the replicas see it (absolute, or relative to their working dir)")
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    api_key_env: Optional[str] = Field(default=None, description="name of the environment variable holding the API key")
    threads: Optional[int] = Field(default=None, ge=1, description="onnxruntime threads per replica (default: num_cpus)")
    max_concurrent: int = Field(default=2, ge=1)
    num_replicas: Optional[int] = Field(default=None, ge=1, description="fixed replica count (else the config's or 1)")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved per replica")
    graceful_shutdown_timeout_s: float = Field(default=30.0, ge=0, description="time a stopping replica gives requests in flight")

    def settings(self) -> ServeSettings:
        threads = self.threads if self.threads is not None else max(1, int(self.num_cpus))
        return ServeSettings(
            model=self.model,
            max_rows=self.max_rows,
            max_body_bytes=self.max_body_bytes,
            api_key_env=self.api_key_env,
            threads=threads,
            max_concurrent=self.max_concurrent,
        )


@serve.deployment(
    name=DEPLOYMENT_NAME,
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=32,
    graceful_shutdown_wait_loop_s=2,
    graceful_shutdown_timeout_s=30,
    health_check_period_s=10,
)
@serve.ingress()
class AugmentDeployment:
    """One replica: the generator loaded once in the constructor, then the FastAPI app built around it."""

    def __init__(self, settings: dict) -> None:
        from augment.generator import Generator

        self.settings = ServeSettings(**settings)
        self.generator = Generator.from_path(self.settings.model, threads=self.settings.session_threads())

    def __serve_build_asgi_app__(self):
        from serving.app import create_app

        return create_app(self.settings, generator=self.generator)


def build_app(args: AugmentServeArgs) -> Application:
    """The typed application builder that ``import_path: serving.ray_app:build_app`` names."""
    options: dict = {"ray_actor_options": {"num_cpus": args.num_cpus}, "graceful_shutdown_timeout_s": args.graceful_shutdown_timeout_s}
    if args.num_replicas is not None:
        options["num_replicas"] = args.num_replicas
    return AugmentDeployment.options(**options).bind(args.settings().to_json())
