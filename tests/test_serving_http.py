"""The service over real HTTP on 127.0.0.1: `augment serve` (uvicorn, a subprocess) and the Ray Serve
application (on the session's local Ray), plus the deploy/ configs it is run from."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARROW = "application/vnd.apache.arrow.stream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base}/healthz not ready within {timeout} s")


def check_endpoints(base: str, headers: dict | None = None) -> list[dict]:
    """The calls both runtimes must answer alike; returns the rows of a seeded request."""
    headers = headers or {}
    assert httpx.get(f"{base}/docs").status_code == 200
    info = httpx.get(f"{base}/v1/model", headers=headers).json()
    assert info["classes"] == ["no", "yes"]
    r = httpx.post(f"{base}/v1/generate", json={"counts": {"yes": 30, "no": 20}, "seed": 5}, headers=headers)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [row["label"] for row in rows] == ["no"] * 20 + ["yes"] * 30
    arrow = httpx.post(f"{base}/v1/generate", json={"counts": {"yes": 30, "no": 20}, "seed": 5},
                       headers={**headers, "accept": ARROW})
    assert pa.ipc.open_stream(arrow.content).read_all().to_pylist() == rows
    bad = httpx.post(f"{base}/v1/generate", json={"counts": {"maybe": 1}}, headers=headers)
    assert bad.status_code == 422 and "known classes: 'no', 'yes'" in bad.text
    source = [{k: v for k, v in row.items() if not k.startswith("augment_")} for row in rows[:3]]
    out = httpx.post(f"{base}/v1/perturb", json={"rows": source, "per_example": 2, "seed": 1, "provenance": True},
                     headers=headers)
    assert out.status_code == 200, out.text
    assert [row["augment_source_row"] for row in out.json()["rows"]] == [0, 0, 1, 1, 2, 2]
    return rows


@pytest.mark.slow
def test_augment_serve_on_uvicorn_over_http(table_bundle):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AUGMENT_TEST_HTTP_KEY": "k3y"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "augment.cli", "serve", "--model", str(table_bundle), "--host", "127.0.0.1",
         "--port", str(port), "--api-key-env", "AUGMENT_TEST_HTTP_KEY", "--max-rows", "1000000", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        wait_healthy(base, proc)
        assert httpx.post(f"{base}/v1/generate", json={"n": 1, "class": "yes"}).status_code == 401
        assert httpx.post(f"{base}/v1/generate", json={"n": 1_000_001, "class": "yes"}, headers={"x-api-key": "k3y"}).status_code == 413
        check_endpoints(base, {"x-api-key": "k3y"})

        # Graceful shutdown: SIGTERM while a large request is in flight; it still completes.
        result: dict = {}

        def big_request() -> None:  # a few seconds of work on CI's machine: a million rows as an Arrow stream
            result["r"] = httpx.post(f"{base}/v1/generate", json={"n": 1_000_000, "class": "no", "seed": 1},
                                     headers={"x-api-key": "k3y", "accept": ARROW}, timeout=120)
            result["done"] = time.monotonic()

        t = threading.Thread(target=big_request)
        t.start()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        t.join(60)
        assert result["done"] > signalled, "the request finished before SIGTERM: make it bigger"
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its clean shutdown
        assert result["r"].status_code == 200
        assert pa.ipc.open_stream(result["r"].content).read_all().num_rows == 1_000_000
        log = proc.stderr.read()
        assert "Traceback" not in log and "Finished server process" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_serve_application_over_http(ray_local, table_bundle):
    """The app built from deploy/serve_config.yaml's import_path and args, through Ray Serve's own builder call."""
    from ray import serve
    try:  # Ray's own builder call: it validates args through the builder's annotation, as `serve run` does
        from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    except ImportError:  # a private helper; without it, do what it does
        def call_user_app_builder_with_args_if_necessary(builder, args):
            return builder(AugmentServeArgs.model_validate(args))

    from serving.app import create_app
    from serving.ray_app import AugmentServeArgs
    from serving.settings import ServeSettings

    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())["applications"][0]
    module, attr = config["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    # leave room on a 2-CPU test Ray; the test Ray's workers do not have the config's key variable: no_auth
    args = {**{k: v for k, v in config["args"].items() if k != "api_key_env"}, "no_auth": True,
            "model": str(table_bundle), "replica_cpus": 0.5}
    app = call_user_app_builder_with_args_if_necessary(builder, args)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app, name="augment", route_prefix="/")
        wait_healthy(base)
        rows = check_endpoints(base)
    finally:
        serve.shutdown()
    # The same bundle, seed and counts give the same rows on Ray Serve as in-process.
    from fastapi.testclient import TestClient

    from augment.generator import Generator

    local = create_app(ServeSettings(model=str(table_bundle)), generator=Generator.from_path(table_bundle, threads=1))
    with TestClient(local) as c:
        assert c.post("/v1/generate", json={"counts": {"yes": 30, "no": 20}, "seed": 5}).json()["rows"] == rows


def test_serve_config_args_are_validated_by_the_typed_builder():
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from serving.ray_app import AugmentServeArgs

    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["import_path"] == "serving.ray_app:build_app"
    AugmentServeArgs.model_validate(app["args"])
    with pytest.raises(ValidationError, match="max_rowz"):
        AugmentServeArgs.model_validate({**app["args"], "max_rowz": 5})
    service = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == config  # the RayService serves the same config
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("augment generate ")


def test_cli_options_and_serve_args_come_from_the_settings_fields():
    import dataclasses

    from serving.cli import serve
    from serving.ray_app import AugmentServeArgs
    from serving.settings import DeploySettings, ServeSettings

    names = [f.name for cls in (ServeSettings, DeploySettings) for f in dataclasses.fields(cls)]
    assert list(AugmentServeArgs.model_fields) == names
    options = {p.name: p for p in serve.params}
    for cls in (ServeSettings, DeploySettings):
        for f in dataclasses.fields(cls):
            assert options[f.name].help == f.metadata["help"] == AugmentServeArgs.model_fields[f.name].description
            if f.default is not dataclasses.MISSING:
                assert options[f.name].default == f.default == AugmentServeArgs.model_fields[f.name].default
