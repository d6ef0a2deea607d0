"""Hostile requests against the service (issue 12): bombs, floods, slow or mistyped bodies, exposure.

Each test refuses what the service once accepted: the numbers in the docstrings are what the old code did.
"""

from __future__ import annotations

import asyncio
import io
import threading
import zlib

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from serving import formats
from serving.app import create_app
from serving.settings import ServeSettings
from tests.test_serving import FakeGenerator, assert_error, client, client_for, real_rows  # noqa: F401 (fixture)

PARQUET, ARROW = formats.PARQUET, formats.ARROW_STREAM


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def arrow(table: pa.Table, compression: str | None = "zstd") -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue()


def rows_table(n: int, job: str = "admin.") -> pa.Table:
    return pa.table({"age": pa.array(np.full(n, 30)), "balance €": pa.array(np.zeros(n)), "income": pa.array(np.zeros(n)),
                     "job": pa.array([job] * n), "flag": pa.array(np.zeros(n, bool)), "label": pa.array(["no"] * n)})


@pytest.fixture(scope="module")
def bomb_rows() -> pa.Table:
    return rows_table(2_000_000)


# --- decompression bombs --------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [parquet, arrow], ids=["parquet", "arrow"])
def test_row_bomb_is_refused_from_the_metadata_before_decoding(encode, bomb_rows, monkeypatch):
    """A small zstd body of 2,000,000 rows was decoded whole before the 100,000-row limit was checked."""
    body = encode(bomb_rows)
    decoded: list = []
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: decoded.append("read_table"))
    monkeypatch.setattr(pq.ParquetFile, "read", lambda self, *a, **k: decoded.append("read"))
    open_stream = pa.ipc.open_stream

    class Spy:  # the stream reader, recording whether the batches were decoded
        def __init__(self, reader):
            self.reader = reader

        def read_all(self):
            decoded.append("read_all")
            return self.reader.read_all()

        def __getattr__(self, name):
            return getattr(self.reader, name)

    monkeypatch.setattr(pa.ipc, "open_stream", lambda *a, **k: Spy(open_stream(*a, **k)))
    with client_for() as c:
        r = c.post("/v1/perturb", content=body, headers={"content-type": PARQUET if encode is parquet else ARROW})
    assert_error(r, 413, "2000000 rows", "at most 100000")
    assert decoded == []


@pytest.mark.parametrize("encode", [parquet, arrow], ids=["parquet", "arrow"])
def test_string_bomb_is_refused_before_the_strings_are_expanded(encode):
    """One 200 KB string referenced by 5,000 rows: 1 GB once expanded, a few KB compressed."""
    body = encode(rows_table(5_000, job="x" * 200_000))
    assert len(body) < 2_000_000
    with client_for(max_body_bytes=4_000_000) as c:
        r = c.post("/v1/perturb", content=body, headers={"content-type": PARQUET if encode is parquet else ARROW})
    assert_error(r, 413, "decode to", "bytes")


def test_only_the_bundles_columns_are_decoded_and_sizes_ignore_others():
    from serving.bodies import read_table_body

    table = rows_table(3)
    got = read_table_body(arrow(table.select(list(reversed(table.column_names)))), ARROW, table.schema,
                          max_rows=10, max_decoded_bytes=1 << 20)
    assert got.column_names == table.column_names and got.num_rows == 3


def test_png_declaring_a_huge_size_is_refused_before_decoding():
    from PIL import Image

    from augment.errors import InputError
    from augment.io import _decode_png

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")

    def declaring(side: int) -> bytes:
        png = bytearray(buf.getvalue())
        png[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height
        png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC
        return bytes(png)

    with pytest.raises(InputError, match="9000x9000 pixels; the bundle's images are 8x8"):  # 81 MB decoded
        _decode_png(declaring(9000), "image", (1, 8, 8))
    with pytest.raises(InputError, match="too large to decode"):  # was a DecompressionBombError: a 500
        _decode_png(declaring(60_000), "image", (1, 8, 8))


# --- the event loop, the queue, time and size ----------------------------------------------------------


def test_json_rows_over_the_limit_are_refused_before_row_objects_are_built(monkeypatch):
    built = []
    real = formats.rows_to_table
    monkeypatch.setattr(formats, "rows_to_table", lambda rows, schema: built.append(len(rows)) or real(rows, schema))
    with client_for(max_rows=5) as c:
        r = c.post("/v1/perturb", json={"rows": real_rows(6)})
        assert_error(r, 413, "6 rows sent", "at most 5")
        assert c.post("/v1/perturb", json={"rows": real_rows(5)}).status_code == 200
    assert built == [5]


def test_json_is_parsed_off_the_event_loop(monkeypatch):
    """A 24 MB JSON body held the loop 1.35 s (and /healthz with it): parsing now runs in a worker thread."""
    from serving import routes

    threads = []
    real = routes.parse_json
    monkeypatch.setattr(routes, "parse_json", lambda *a: threads.append(threading.current_thread()) or real(*a))
    with client_for() as c:
        assert c.post("/v1/generate", json={"n": 1, "class": "yes"}).status_code == 200
        assert c.post("/v1/perturb", json={"rows": real_rows(2)}).status_code == 200
    assert len(threads) == 2 and threading.main_thread() not in threads
    loop_threads = [t for t in threads if t.name.startswith("MainThread")]
    assert loop_threads == []


class SlowGenerator(FakeGenerator):
    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release, self.started = release, threading.Semaphore(0)

    def sample(self, *args, **kwargs):
        self.started.release()
        self.release.wait(10)
        return super().sample(*args, **kwargs)


def test_queue_is_bounded_with_503_and_retry_after():
    release = threading.Event()
    gen = SlowGenerator(release)
    app = create_app(ServeSettings(model="unused", max_concurrent=1, max_queue=1), generator=gen)
    results: list = []
    with TestClient(app, raise_server_exceptions=False) as c:
        def post():
            results.append(c.post("/v1/generate", json={"n": 1, "class": "yes"}).status_code)

        first = threading.Thread(target=post)
        first.start()
        assert gen.started.acquire(timeout=10)  # running: holds the one slot
        second = threading.Thread(target=post)
        second.start()  # queued
        for _ in range(200):
            if app.state.service.in_flight == 2:
                break
            threading.Event().wait(0.01)
        r = c.post("/v1/generate", json={"n": 1, "class": "yes"})
        assert_error(r, 503, "at capacity")
        assert r.headers["retry-after"] == "1"
        assert c.get("/healthz").status_code == 200  # probes are never queued
        release.set()
        first.join(10)
        second.join(10)
    assert sorted(results) == [200, 200]


def test_waiting_past_the_request_time_is_503():
    release = threading.Event()
    gen = SlowGenerator(release)
    app = create_app(ServeSettings(model="unused", max_concurrent=1, request_timeout=0.3), generator=gen)
    with TestClient(app, raise_server_exceptions=False) as c:
        first = threading.Thread(target=lambda: c.post("/v1/generate", json={"n": 1, "class": "yes"}))
        first.start()
        assert gen.started.acquire(timeout=10)
        r = c.post("/v1/generate", json={"n": 1, "class": "yes"})
        assert_error(r, 503, "no inference slot freed up within 0.3 s")
        assert r.headers["retry-after"] == "1"
        release.set()
        first.join(10)


def test_a_body_that_arrives_too_slowly_is_408():
    async def scenario() -> list:
        app = create_app(ServeSettings(model="unused", request_timeout=0.2), generator=FakeGenerator())
        sent: list = []

        async def receive():
            await anyio.sleep(5)  # the client never sends its body
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/generate", "raw_path": b"/v1/generate", "root_path": "", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"30")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}, "app": app}
        with anyio.fail_after(3):
            await app(scope, receive, send)
        return sent

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and b"did not arrive within 0.2 s" in sent[1]["body"]


def test_response_size_is_bounded_in_bytes_before_generating():
    gen = FakeGenerator()
    with client_for(gen, max_response_bytes=20_000) as c:
        r = c.post("/v1/generate", json={"n": 1000, "class": "yes"})
        assert_error(r, 413, "would be about", "at most 20000", "Parquet or Arrow")
        assert gen.calls == 0
        r = c.post("/v1/generate", json={"n": 100, "class": "yes"})
        assert r.status_code == 200 and len(r.content) < 20_000  # the estimate is from above
        assert c.post("/v1/perturb", json={"rows": real_rows(2), "per_example": 1000}).status_code == 413


# --- one content-type rule, strict counts ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/perturb"])
def test_wrong_content_type_is_415_on_both_endpoints(client, path):
    r = client.post(path, content=b'{"n": 1, "class": "yes"}', headers={"content-type": "text/plain"})
    assert_error(r, 415, "text/plain", "application/json")
    assert_error(client.post(path, content=b"x"), 415, "(none)")


@pytest.mark.parametrize("req, where", [({"n": "5", "class": "yes"}, "n"), ({"counts": {"yes": "100"}}, "counts"),
                                        ({"n": 5, "class": "yes", "seed": "7"}, "seed"),
                                        ({"n": True, "class": "yes"}, "n")])
def test_counts_sent_as_strings_are_refused(client, req, where):
    assert_error(client.post("/v1/generate", json=req), 422, where)


def test_perturb_counts_as_strings_are_refused(client):
    assert_error(client.post("/v1/perturb", json={"rows": real_rows(2), "per_example": "3"}), 422, "per_example")


# --- exposure --------------------------------------------------------------------------------------------


def test_model_info_carries_no_host_details_or_training_paths():
    gen = FakeGenerator()
    gen.bundle.json["training"].update(source="/home/alice/secret/bank.parquet", platform="Linux-6.1-x86_64-glibc2.36",
                                       torch_version="2.13.0")
    with client_for(gen) as c:
        text = c.get("/v1/model").text
    assert "alice" not in text and "Linux" not in text and "torch_version" not in text
    assert '"metrics"' in text


def test_binding_beyond_loopback_needs_a_key_or_no_auth(table_bundle, monkeypatch):
    from click.testing import CliRunner

    from augment.cli import cli

    r = CliRunner().invoke(cli, ["serve", "--model", str(table_bundle), "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "--api-key-env" in r.output and "--no-auth" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["serve", "--model", str(table_bundle), "--no-auth", "--api-key-env", "K"])
    assert r.exit_code == 1 and "contradict" in r.output


def test_the_image_and_serve_configs_require_a_key():
    from pathlib import Path

    import yaml

    from augment.errors import AugmentError
    from serving.ray_app import AugmentServeArgs, build_app

    root = Path(__file__).resolve().parents[1]
    cmd = (root / "deploy" / "Dockerfile").read_text().split("\nCMD ")[1]
    assert '"--api-key-env"' in cmd and '"0.0.0.0"' in cmd
    args = yaml.safe_load((root / "deploy" / "serve_config.yaml").read_text())["applications"][0]["args"]
    assert args["api_key_env"] == "AUGMENT_API_KEY"
    with pytest.raises(AugmentError, match="no API key"):
        build_app(AugmentServeArgs.model_validate({k: v for k, v in args.items() if k != "api_key_env"}))
    build_app(AugmentServeArgs.model_validate({**{k: v for k, v in args.items() if k != "api_key_env"}, "no_auth": True}))
