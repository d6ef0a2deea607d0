"""``augment serve``: the generation service on uvicorn (default) or on Ray Serve (``--ray``).

    augment serve --model models/bank --host 127.0.0.1 --port 8000 [--api-key-env AUGMENT_API_KEY]
    augment serve --model models/bank --ray --replicas 2

Both load the bundle before listening, so a bad ``--model`` is a one-line error, not a 503 loop. SIGTERM or
Ctrl-C stops accepting connections, lets requests in flight finish (``--graceful-timeout``), then exits. The
service's own options come from ``serving.settings`` (one definition for this command and the Ray builder).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import typing

import click

from augment.cli import run_command
from serving.settings import LOOPBACK, DeploySettings, ServeSettings, check_exposure, read_api_key, setting_fields

__all__ = ["serve", "settings_options"]


def _click_type(hint: typing.Any, meta: typing.Mapping) -> typing.Any:
    if meta.get("kind") == "dir":  # a folder or a URI (s3://...): checked by loading it, in one line
        return str
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)  # X | None -> X
    if base is int:
        return click.IntRange(min=meta.get("min"), min_open=meta.get("min_open", False))
    if base is float:
        return click.FloatRange(min=meta.get("min"), min_open=meta.get("min_open", False))
    return base


def settings_options(cls: type):
    """A decorator adding one click option per field of the settings dataclass ``cls`` (its help and bounds)."""
    hints = typing.get_type_hints(cls)

    def decorate(fn):
        for f in reversed(setting_fields(cls)):
            flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
            kwargs: dict = {"help": f.metadata["help"], "metavar": f.metadata.get("metavar")}
            if hints[f.name] is bool:
                kwargs.update(is_flag=True, default=f.default)
            elif f.default is dataclasses.MISSING:  # no default: a required option
                kwargs.update(required=True, type=_click_type(hints[f.name], f.metadata))
            else:
                kwargs.update(default=f.default, show_default=f.default is not None,
                              type=_click_type(hints[f.name], f.metadata))
            fn = click.option(flag, f.name, **kwargs)(fn)
        return fn

    return decorate


@click.command("serve")
@settings_options(ServeSettings)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@settings_options(DeploySettings)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Serve instead of uvicorn.")
@click.option("--ray-address", default=None, help="With --ray: an existing cluster (e.g. auto); default: start a local Ray.")
@run_command
def serve(host, port, log_level, use_ray, ray_address, **options) -> None:
    """Serve on-demand generation over HTTP: /v1/generate, /v1/perturb, /v1/model, /healthz, /docs."""
    from augment.fs import resolve

    options["model"] = resolve(options["model"]).uri  # Ray replicas do not share our working directory
    settings = ServeSettings(**{f.name: options[f.name] for f in setting_fields(ServeSettings)})
    deploy = DeploySettings(**{f.name: options[f.name] for f in setting_fields(DeploySettings)})
    check_exposure(settings, host)  # no key beyond loopback only when asked for (--no-auth)
    read_api_key(settings)  # a named but unset key variable fails here, before anything starts
    if use_ray:
        _serve_ray(settings, deploy, host, port, ray_address)
    else:
        _serve_uvicorn(settings, deploy, host, port, log_level)


def _serve_uvicorn(settings: ServeSettings, deploy: DeploySettings, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from augment.generator import Generator
    from serving.app import create_app

    gen = Generator.from_path(settings.model, threads=settings.session_threads())
    app = create_app(settings, generator=gen)
    click.echo(f"augment: bundle {gen.bundle.sha256[:12]} ({len(gen.classes)} classes) on http://{host}:{port} (docs at /docs)", err=True)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, finish requests in flight, run the lifespan shutdown.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=deploy.graceful_timeout,
                server_header=False, proxy_headers=False)


def _serve_ray(settings: ServeSettings, deploy: DeploySettings, host: str, port: int, ray_address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve as ray_serve

    from augment.bundle import load_bundle
    from serving.ray_app import AugmentServeArgs, build_app

    from augment.fs import storage_env

    bundle = load_bundle(settings.model)  # fail here, in one line, rather than in a replica's log
    env = storage_env()  # replicas on other nodes reach the bundle's bucket as this process does
    runtime_env = {"env_vars": env} if env else None
    replicas = deploy.replicas or 1
    if ray_address:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, int(replicas * deploy.replica_cpus + 0.999)),
                 include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        # The builder insists on a key or no_auth (it cannot see the host); on loopback, no key is what we checked.
        no_auth = settings.no_auth or (settings.api_key_env is None and host in LOOPBACK)
        args = AugmentServeArgs(**{**settings.to_json(), "no_auth": no_auth}, **{**deploy.__dict__, "replicas": replicas})
        ray_serve.run(build_app(args), name="augment", route_prefix="/")
        click.echo(f"augment: bundle {bundle.sha256[:12]} on Ray Serve, {replicas} replica(s), "
                   f"http://{host}:{port} (docs at /docs)", err=True)
        stop.wait()
        click.echo("augment: shutting down Ray Serve", err=True)
    finally:
        try:
            ray_serve.shutdown()
        finally:
            ray.shutdown()
