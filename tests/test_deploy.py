"""deploy/: every manifest parses, and every command, flag, import path and `ray start` option it names exists.

Also: no shared volume (bundles and output in a bucket), requests and limits on every container (requests
within limits), the bucket's credentials and the service's key from Secrets, the key variable the replicas read
being the one the pods get.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def walk(node, key: str):
    """Every value under ``key`` anywhere in a parsed YAML tree (serveConfigV2 parsed as YAML too)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            if k == "serveConfigV2" and isinstance(v, str):
                yield from walk(yaml.safe_load(v), key)
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def check_augment_command(words: list[str]) -> None:
    """``augment CMD --flag ...``: CMD is a command of the CLI and every --flag one of its options."""
    from augment.cli import cli

    assert words[0] == "augment", words
    command = cli.get_command(click.Context(cli), words[1])  # the lazy group imports the command it names
    assert command is not None, f"augment has no command {words[1]!r}"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    flags = [w.split("=", 1)[0] for w in words[2:] if w.startswith("--")]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"augment {words[1]}: no such option(s) {unknown}"


def ray_start_options() -> set[str]:
    from ray.scripts.scripts import start

    return {opt.lstrip("-") for p in start.params for opt in p.opts}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_names_only_what_exists(path):
    manifests = docs(path)
    assert manifests, f"{path.name} is empty"
    for entry in (e for m in manifests for e in walk(m, "entrypoint")):
        check_augment_command(shlex.split(entry))
    for target in (t for m in manifests for t in walk(m, "import_path")):
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), target
    allowed = ray_start_options()
    for params in (p for m in manifests for p in walk(m, "rayStartParams")):
        unknown = sorted(set(params) - allowed)
        assert not unknown, f"{path.name}: ray start has no option(s) {unknown}"
    for m in manifests:
        assert not list(walk(m, "persistentVolumeClaim")), f"{path.name}: a volume; bundles and output are in a bucket"


def containers(path: Path) -> list[dict]:
    return [c for m in docs(path) for cs in walk(m, "containers") for c in cs]


QUANTITY = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(text) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * QUANTITY[unit]


@pytest.mark.parametrize("path", [p for p in MANIFESTS if containers(p)], ids=lambda p: p.name)
def test_every_container_has_requests_within_limits_and_its_secrets(path):
    for c in containers(path):
        res = c["resources"]
        for kind in ("cpu", "memory"):
            assert quantity(res["requests"][kind]) <= quantity(res["limits"][kind]), (c["name"], kind)
        secrets = [e["secretRef"]["name"] for e in c.get("envFrom", [])]
        assert "augment-s3" in secrets, f"{c['name']}: no bucket credentials (Secret augment-s3)"


def test_rayjob_writes_to_a_bucket_and_resumes():
    (job,) = docs(DEPLOY / "rayjob.yaml")
    words = shlex.split(job["spec"]["entrypoint"])
    opts = dict(zip(words, words[1:]))
    assert opts["--model"].startswith("s3://") and opts["--out"].startswith("s3://")
    assert "--resume" in words and opts["--ray-address"] == "auto"


def test_service_key_comes_from_a_secret_and_is_the_variable_the_replicas_read():
    (service,) = docs(DEPLOY / "rayservice.yaml")
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["model"].startswith("s3://")
    for c in containers(DEPLOY / "rayservice.yaml"):
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env[args["api_key_env"]]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "augment-api-key" and not ref.get("optional", False)


def test_dockerfile_commands_and_imports_exist():
    text = (DEPLOY / "Dockerfile").read_text()
    entry = shlex.split(re.search(r"^ENTRYPOINT \[(.*)\]$", text, re.M).group(1).replace(",", " "))
    cmd = shlex.split(re.search(r"^CMD \[(.*)\]$", text, re.M).group(1).replace(",", " "))
    assert entry[-1] == "augment"
    check_augment_command(["augment", *cmd])
    for line in re.findall(r'python -c "import ([\w., ]+)"', text):
        for module in line.split(","):
            importlib.import_module(module.strip())
