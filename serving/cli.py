"""``augment serve``: the generation service on uvicorn (default) or on Ray Serve (``--ray``).

    augment serve --model models/bank --host 127.0.0.1 --port 8000 [--api-key-env AUGMENT_API_KEY]
    augment serve --model models/bank --ray --replicas 2

Both load the bundle before listening, so a bad ``--model`` is a one-line error, not a 503 loop. SIGTERM or
Ctrl-C stops accepting connections, lets requests in flight finish (``--graceful-timeout``), then exits.
"""

from __future__ import annotations

import os
import signal
import threading

import click

from augment.cli import run_command
from serving.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ROWS, ServeSettings, read_api_key

__all__ = ["serve"]


@click.command("serve")
@click.option("--model", required=True, help="Bundle folder, or its URI (s3://, gs://, file://): loaded once per replica.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key-env", default=None, metavar="NAME", help="Environment variable holding the API key (401 without it).")
@click.option("--max-rows", default=DEFAULT_MAX_ROWS, show_default=True, type=click.IntRange(min=1), help="Rows one request may ask for (413 beyond).")
@click.option("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True, type=click.IntRange(min=1), help="Largest request body (413 beyond).")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="onnxruntime threads per session (default: cores / --max-concurrent; with --ray: the replica's CPUs).")
@click.option("--max-concurrent", default=2, show_default=True, type=click.IntRange(min=1), help="Inference calls at once per process.")
@click.option("--graceful-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to let requests in flight finish on shutdown.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Serve instead of uvicorn.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1), help="With --ray: replicas of the app.")
@click.option("--replica-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="With --ray: CPUs per replica.")
@click.option("--ray-address", default=None, help="With --ray: an existing cluster (e.g. auto); default: start a local Ray.")
@run_command
def serve(model, host, port, api_key_env, max_rows, max_body_bytes, threads, max_concurrent, graceful_timeout,
          log_level, use_ray, replicas, replica_cpus, ray_address) -> None:
    """Serve on-demand generation over HTTP: /v1/generate, /v1/perturb, /v1/model, /healthz, /docs."""
    from augment.fs import resolve

    model = resolve(model).uri  # Ray replicas do not share our working directory
    settings = ServeSettings(model=model, max_rows=max_rows, max_body_bytes=max_body_bytes, api_key_env=api_key_env,
                             threads=threads, max_concurrent=max_concurrent)
    read_api_key(settings)  # a named but unset key variable fails here, before anything starts
    if use_ray:
        _serve_ray(settings, host, port, replicas, replica_cpus, ray_address, graceful_timeout)
    else:
        _serve_uvicorn(settings, host, port, graceful_timeout, log_level)


def _serve_uvicorn(settings: ServeSettings, host: str, port: int, graceful_timeout: float, log_level: str) -> None:
    import uvicorn

    from augment.generator import Generator
    from serving.app import create_app

    gen = Generator.from_path(settings.model, threads=settings.session_threads())
    app = create_app(settings, generator=gen)
    click.echo(f"augment: bundle {gen.bundle.sha256[:12]} ({len(gen.classes)} classes) on http://{host}:{port} (docs at /docs)", err=True)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, finish requests in flight, run the lifespan shutdown.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout,
                server_header=False, proxy_headers=False)


def _serve_ray(settings: ServeSettings, host: str, port: int, replicas: int, replica_cpus: float,
               ray_address: str | None, graceful_timeout: float) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve as ray_serve

    from augment.bundle import load_bundle
    from serving.ray_app import AugmentServeArgs, build_app

    from augment.fs import storage_env

    bundle = load_bundle(settings.model)  # fail here, in one line, rather than in a replica's log
    env = storage_env()  # replicas on other nodes reach the bundle's bucket as this process does
    runtime_env = {"env_vars": env} if env else None
    if ray_address:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, int(replicas * replica_cpus + 0.999)), include_dashboard=False,
                 log_to_driver=False, runtime_env=runtime_env)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        args = AugmentServeArgs(
            model=settings.model, max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes,
            api_key_env=settings.api_key_env, threads=settings.threads, max_concurrent=settings.max_concurrent,
            num_replicas=replicas, num_cpus=replica_cpus, graceful_shutdown_timeout_s=graceful_timeout,
        )
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
