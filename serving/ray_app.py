"""The same FastAPI app on Ray Serve: one deployment whose replicas each load the bundle once.

A Serve config names the typed builder::

    applications:
      - name: augment
        import_path: serving.ray_app:build_app
        args: {model: /models/bank, max_rows: 100000, api_key_env: AUGMENT_API_KEY}

and ``serve run deploy/serve_config.yaml`` validates ``args`` against ``AugmentServeArgs`` before anything
starts. ``augment serve --ray`` calls the same builder. ``AugmentServeArgs`` is derived from the fields of
``serving.settings`` (ServeSettings and DeploySettings), so its keys are the CLI's options with underscores.
Replicas read the API key from their own environment (``api_key_env`` names the variable), so the key never
travels through Ray's control plane.
"""

# No `from __future__ import annotations` here: Ray Serve reads the builder's parameter annotation as a class
# to validate the config's `args` with, and postponed (string) annotations would hide it.

import dataclasses
import typing

from pydantic import BaseModel, ConfigDict, Field, create_model
from ray import serve
from ray.serve import Application

from serving.settings import DeploySettings, ServeSettings, check_exposure, setting_fields

__all__ = ["AugmentServeArgs", "AugmentDeployment", "build_app", "DEPLOYMENT_NAME"]

DEPLOYMENT_NAME = "augment"


class _ArgsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def settings(self) -> ServeSettings:
        values = {f.name: getattr(self, f.name) for f in setting_fields(ServeSettings)}
        if values["threads"] is None:  # a replica's threads follow the CPUs it reserves
            values["threads"] = max(1, int(self.replica_cpus))
        return ServeSettings(**values)


def _args_model() -> type:
    fields: dict = {}
    for cls in (ServeSettings, DeploySettings):
        hints = typing.get_type_hints(cls)
        for f in setting_fields(cls):
            meta = f.metadata
            bounds = {("gt" if meta.get("min_open") else "ge"): meta["min"]} if meta.get("min") is not None else {}
            default = ... if f.default is dataclasses.MISSING else f.default
            fields[f.name] = (hints[f.name], Field(default=default, description=meta["help"], **bounds))
    return create_model("AugmentServeArgs", __base__=_ArgsBase, __doc__="The ``args`` of a Serve config that names "
                        "``serving.ray_app:build_app`` (the fields of serving.settings).", **fields)


AugmentServeArgs = _args_model()


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
    """The typed application builder that ``import_path: serving.ray_app:build_app`` names.

    Serve's proxies listen on every node, so a key (``api_key_env``) or an explicit ``no_auth: true`` is required.
    """
    check_exposure(args.settings(), None)
    options: dict = {"ray_actor_options": {"num_cpus": args.replica_cpus}, "graceful_shutdown_timeout_s": args.graceful_timeout}
    if args.replicas is not None:
        options["num_replicas"] = args.replicas
    return AugmentDeployment.options(**options).bind(args.settings().to_json())
