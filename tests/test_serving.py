"""The HTTP app through FastAPI's TestClient: every endpoint and every error, on a stand-in generator (fast)
and on the tiny trained bundles (the real generator)."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from augment.errors import InputError, SchemaError
from augment.batch.plan import chunk_rng, plan_shards
from serving import formats
from serving.app import create_app
from serving.settings import ServeSettings

PARQUET, ARROW = formats.PARQUET, formats.ARROW_STREAM


# --- a stand-in generator with the real one's interface (rows drawn from rng only) ---------------------

PROVENANCE_FIELDS = [
    pa.field("augment_mode", pa.string()),
    pa.field("augment_source_row", pa.int64()),
    pa.field("augment_source_row_b", pa.int64()),
    pa.field("augment_alpha", pa.float32()),
]
SCHEMA = pa.schema(
    [
        pa.field("age", pa.int64()),
        pa.field("balance €", pa.float64()),
        pa.field("income", pa.float64()),
        pa.field("job", pa.string()),
        pa.field("flag", pa.bool_()),
        pa.field("label", pa.string()),
    ]
)


class FakeGenerator:
    """Rows drawn from ``rng`` only, so seeds behave as with the real generator."""

    def __init__(self, classes=("no", "yes"), fail: Exception | None = None) -> None:
        self.classes = list(classes)
        self.schema = SCHEMA
        self.output_schema = pa.schema(list(SCHEMA) + PROVENANCE_FIELDS)
        self.bundle = SimpleNamespace(
            sha256="ab" * 32,
            json={
                "modality": "table",
                "label": {"column": "label", "classes": self.classes, "counts": [280, 120]},
                "latent_dim": 4,
                "training": {"config": {"epochs": 1}, "metrics": {"val_elbo": -1.5}},
            },
        )
        self.fail = fail
        self.calls = 0

    def _rows(self, labels: list, rng: np.random.Generator, mode: str, source=None) -> pa.Table:
        n = len(labels)
        income = rng.normal(50, 5, n)
        cols = [
            pa.array(rng.integers(18, 90, n)),
            pa.array(rng.normal(1000, 300, n)),
            pa.array(income, mask=rng.random(n) < 0.2),
            pa.array(rng.choice(["admin.", "technician"], n)),
            pa.array(rng.random(n) < 0.5),
            pa.array([str(x) for x in labels]),
            pa.array([mode] * n),
            pa.array(source, pa.int64()) if source is not None else pa.nulls(n, pa.int64()),
            pa.nulls(n, pa.int64()),
            pa.nulls(n, pa.float32()),
        ]
        return pa.Table.from_arrays(cols, schema=self.output_schema)

    def sample(self, class_index, n, rng, *, sampler="mixture", temperature=1.0):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self._rows([self.classes[class_index]] * n, rng, "sample")

    def perturb(self, table, per_example, noise, rng, *, source_offset=0, temperature=1.0):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if "label" not in table.column_names:
            raise SchemaError("source has no label column 'label'")
        labels = np.repeat(np.array(table.column("label").to_pylist(), dtype=object), per_example).tolist()
        source = np.repeat(np.arange(table.num_rows) + source_offset, per_example)
        return self._rows(labels, rng, "perturb", source)


def client_for(gen=None, **settings) -> TestClient:
    app = create_app(ServeSettings(model="unused", **settings), generator=gen if gen is not None else FakeGenerator())
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture()
def client():
    with client_for() as c:
        yield c


def real_rows(n: int = 4) -> list[dict]:
    rows = [
        {"age": 30 + i, "balance €": 100.5 * i, "income": None if i % 2 else 50.0, "job": "admin.", "flag": bool(i % 2), "label": "yes" if i % 2 else "no"}
        for i in range(n)
    ]
    return rows


def assert_error(r, status: int, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    text = orjson.dumps(body).decode()
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "Traceback" not in text and 'File "' not in text
    return body


# --- health, model, docs --------------------------------------------------------------------------------


def test_healthz_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "bundle_sha256": "ab" * 32}


def test_healthz_fails_until_loaded_then_ok():
    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return FakeGenerator()

    app = create_app(ServeSettings(model="unused"), loader=slow_loader)
    with TestClient(app) as c:
        assert_error(c.get("/healthz"), 503, "still loading")
        assert_error(c.post("/v1/generate", json={"n": 1, "class": "yes"}), 503, "still loading")
        release.set()
        for _ in range(200):
            if c.get("/healthz").status_code == 200:
                break
            threading.Event().wait(0.02)
        assert c.get("/healthz").status_code == 200


def test_healthz_reports_a_failed_load_without_traceback():
    from augment.errors import BundleError

    def bad_loader():
        raise BundleError("bundle 'x': encoder.onnx fails its checksum")

    with TestClient(create_app(ServeSettings(model="unused"), loader=bad_loader)) as c:
        for _ in range(200):
            r = c.get("/healthz")
            if "failed" in r.text:
                break
            threading.Event().wait(0.02)
        assert_error(r, 503, "bundle failed to load", "fails its checksum")


def test_model_info(client):
    r = client.get("/v1/model")
    assert r.status_code == 200
    info = r.json()
    assert info["classes"] == ["no", "yes"] and info["class_names"] == ["no", "yes"]
    assert info["bundle_sha256"] == "ab" * 32
    assert info["training"]["metrics"] == {"val_elbo": -1.5}
    assert [f["name"] for f in info["schema"]] == ["age", "balance €", "income", "job", "flag", "label"]
    assert info["output_schema"][-4]["name"] == "augment_mode"
    assert info["limits"]["max_rows"] == 100_000
    assert info["samplers"] == ["mixture", "prior"]


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/model", "/v1/generate", "/v1/perturb"} <= set(spec["paths"])
    assert PARQUET in spec["paths"]["/v1/perturb"]["post"]["requestBody"]["content"]


# --- generate ----------------------------------------------------------------------------------------------


def test_generate_counts_json(client):
    r = client.post("/v1/generate", json={"counts": {"yes": 3, "no": 2}, "seed": 7, "provenance": True})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["counts"] == {"no": 2, "yes": 3} and body["seed"] == 7 and body["bundle_sha256"] == "ab" * 32
    labels = [row["label"] for row in body["rows"]]
    assert labels == ["no"] * 2 + ["yes"] * 3  # plan order: class index order
    assert set(body["rows"][0]) == {"age", "balance €", "income", "job", "flag", "label", "augment_mode",
                                    "augment_source_row", "augment_source_row_b", "augment_alpha"}
    assert all(row["augment_mode"] == "sample" and row["augment_source_row"] is None for row in body["rows"])


def test_generate_follows_the_shard_plan():
    gen = FakeGenerator()
    with client_for(gen) as c:
        rows = c.post("/v1/generate", json={"counts": {"yes": 3, "no": 2}, "seed": 11, "provenance": True}).json()["rows"]
    expected = pa.concat_tables(
        [gen.sample(s.class_index, s.rows, chunk_rng(11, s.class_index, s.index, 0)) for s in plan_shards({0: 2, 1: 3})]
    )
    assert rows == expected.to_pylist()


def test_generate_n_and_class_same_seed_same_rows(client):
    a = client.post("/v1/generate", json={"n": 4, "class": "yes", "seed": 3}).json()
    b = client.post("/v1/generate", json={"counts": {"yes": 4}, "seed": 3}).json()
    c = client.post("/v1/generate", json={"n": 4, "class": "yes", "seed": 4}).json()
    assert a["rows"] == b["rows"] and a["rows"] != c["rows"]
    assert a["counts"] == {"yes": 4}


def test_generate_without_seed_reports_the_seed_it_drew(client):
    body = client.post("/v1/generate", json={"n": 2, "class": "no"}).json()
    again = client.post("/v1/generate", json={"n": 2, "class": "no", "seed": body["seed"]}).json()
    assert isinstance(body["seed"], int) and body["seed"] < 2**53
    assert again["rows"] == body["rows"]


@pytest.mark.parametrize("accept", [PARQUET, ARROW, f"{ARROW}, application/json;q=0.5"])
def test_generate_binary_formats_match_json(client, accept):
    req = {"counts": {"yes": 5, "no": 5}, "seed": 1, "sampler": "prior", "temperature": 0.5}
    rows = client.post("/v1/generate", json=req).json()["rows"]
    r = client.post("/v1/generate", json=req, headers={"accept": accept})
    assert r.status_code == 200
    if r.headers["content-type"] == PARQUET:
        table = pq.read_table(io.BytesIO(r.content))
    else:
        assert r.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(r.content).read_all()
    assert table.to_pylist() == rows
    assert orjson.loads(table.schema.metadata[b"augment"])["seed"] == 1
    assert r.headers["x-augment-seed"] == "1" and orjson.loads(r.headers["x-augment-counts"]) == {"no": 5, "yes": 5}


def test_generate_unknown_class_lists_known_ones(client):
    body = assert_error(client.post("/v1/generate", json={"counts": {"maybe": 3}}), 422, "'maybe'", "known classes: 'no', 'yes'")
    assert body["detail"][0]["loc"] == ["body", "counts", "maybe"]
    assert_error(client.post("/v1/generate", json={"n": 3, "class": "Yes"}), 422, "known classes: 'no', 'yes'")


@pytest.mark.parametrize(
    "req, fragments",
    [
        ({"n": 2, "class": "yes", "sampler": "gan"}, ["sampler", "'mixture' or 'prior'"]),
        ({"n": 2, "class": "yes", "temperature": 0}, ["temperature", "greater than 0"]),
        ({"n": 2, "class": "yes", "seed": -1}, ["seed", "greater than or equal to 0"]),
        ({"n": 0, "class": "yes"}, ["n", "greater than or equal to 1"]),
        ({"counts": {"yes": -1}}, ["counts", "greater than or equal to 0"]),
        ({"counts": {"yes": 0}}, ["no rows"]),
        ({"counts": {"yes": 1}, "n": 1, "class": "yes"}, ["either counts, or n and class"]),
        ({"n": 5}, ["counts", "n and class"]),
        ({"n": 5, "class": "yes", "colour": "red"}, ["colour", "Extra inputs"]),
    ],
)
def test_generate_validation_names_the_field(client, req, fragments):
    assert_error(client.post("/v1/generate", json=req), 422, *fragments)


def test_generate_bad_json_is_422(client):
    r = client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 422, "json")


def test_generate_too_many_rows_is_413():
    with client_for(max_rows=10) as c:
        assert c.post("/v1/generate", json={"counts": {"yes": 5, "no": 5}}).status_code == 200
        assert_error(c.post("/v1/generate", json={"counts": {"yes": 6, "no": 5}}), 413, "11 rows", "at most 10")
        assert_error(c.post("/v1/generate", json={"n": 11, "class": "no"}), 413, "at most 10")


def test_unacceptable_accept_is_406(client):
    r = client.post("/v1/generate", json={"n": 1, "class": "yes"}, headers={"accept": "text/csv"})
    assert_error(r, 406, "text/csv", PARQUET, ARROW)


def test_body_too_large_is_413():
    with client_for(max_body_bytes=200) as c:
        big = {"n": 1, "class": "yes", "pad": "x" * 500}
        assert_error(c.post("/v1/generate", json=big), 413, "at most 200 bytes")

        def chunks():  # no content-length: the middleware counts
            yield b'{"n": 1, "class": "yes", '
            yield b'"pad": "' + b"x" * 400 + b'"}'

        r = c.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "at most 200 bytes")

        def small():
            yield b'{"n": 1, '
            yield b'"class": "yes"}'

        assert c.post("/v1/generate", content=small(), headers={"content-type": "application/json"}).status_code == 200


def test_generator_errors_become_422_and_bugs_500_without_traceback():
    with client_for(FakeGenerator(fail=InputError("temperature 7 is too hot"))) as c:
        assert_error(c.post("/v1/generate", json={"n": 1, "class": "yes"}), 422, "temperature 7 is too hot")
    with client_for(FakeGenerator(fail=ZeroDivisionError("secret internals"))) as c:
        r = c.post("/v1/generate", json={"n": 1, "class": "yes"})
        assert_error(r, 500, "internal error")
        assert "secret internals" not in r.text and "ZeroDivisionError" not in r.text


def test_unknown_route_and_method(client):
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/generate").status_code == 405


# --- API key -------------------------------------------------------------------------------------------


def test_api_key(monkeypatch):
    monkeypatch.setenv("AUGMENT_TEST_KEY", "s3cret-ключ")
    with client_for(api_key_env="AUGMENT_TEST_KEY") as c:
        req = {"n": 1, "class": "yes"}
        r = c.post("/v1/generate", json=req)
        assert_error(r, 401, "API key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(c.post("/v1/generate", json=req, headers={"x-api-key": "wrong"}), 401)
        assert_error(c.get("/v1/model"), 401)
        assert_error(c.post("/v1/perturb", json={"rows": real_rows()}), 401)
        key = "s3cret-ключ".encode()  # header values are bytes; a non-ASCII key travels as its UTF-8 bytes
        assert c.post("/v1/generate", json=req, headers={"x-api-key": key}).status_code == 200
        assert c.post("/v1/generate", json=req, headers={"authorization": b"Bearer " + key}).status_code == 200
        assert_error(c.post("/v1/generate", json=req, headers={"x-api-key": key[:-1]}), 401)
        assert c.get("/healthz").status_code == 200  # probes need no key
        assert c.get("/docs").status_code == 200


def test_api_key_env_unset_fails_at_start(monkeypatch):
    from augment.errors import AugmentError

    monkeypatch.delenv("AUGMENT_TEST_KEY", raising=False)
    with pytest.raises(AugmentError, match="AUGMENT_TEST_KEY"):
        create_app(ServeSettings(model="unused", api_key_env="AUGMENT_TEST_KEY"), generator=FakeGenerator())


# --- perturb ---------------------------------------------------------------------------------------------


def test_perturb_json(client):
    rows = real_rows(4)
    r = client.post("/v1/perturb", json={"rows": rows, "per_example": 3, "noise": 0.5, "seed": 2, "provenance": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source_rows"] == 4 and body["per_example"] == 3 and body["seed"] == 2
    out = body["rows"]
    assert [row["augment_source_row"] for row in out] == [i for i in range(4) for _ in range(3)]
    assert [row["label"] for row in out] == [rows[i]["label"] for i in range(4) for _ in range(3)]
    assert all(row["augment_mode"] == "perturb" for row in out)


@pytest.mark.parametrize("media_type", [PARQUET, ARROW])
def test_perturb_binary_body_and_response(client, media_type):
    rows = real_rows(5)
    table = formats.rows_to_table(rows, FakeGenerator().schema).drop_columns(["income"]).append_column(
        "income", pa.array([1.0, None, 2.0, None, 3.0], pa.float32())  # another order and a castable type
    )
    body = formats.encode_table(table, media_type)
    r = client.post("/v1/perturb?per_example=2&seed=5&provenance=true", content=body, headers={"content-type": media_type, "accept": ARROW})
    assert r.status_code == 200, r.text
    out = pa.ipc.open_stream(r.content).read_all()
    assert out.column("augment_source_row").to_pylist() == [i for i in range(5) for _ in range(2)]
    same = client.post("/v1/perturb", json={"rows": rows, "per_example": 2, "seed": 5, "provenance": True})
    assert same.json()["rows"] == out.to_pylist()


def test_perturb_columns_mismatch_names_them(client):
    rows = [{**{k: v for k, v in row.items() if k != "income"}, "salary": 1.0} for row in real_rows()]
    body = assert_error(client.post("/v1/perturb", json={"rows": rows}), 422, "missing columns ['income']", "unexpected columns ['salary']")
    assert body["detail"][0]["loc"] == ["body", "rows", "income"]
    table = formats.rows_to_table(real_rows(), FakeGenerator().schema).drop_columns(["label"])
    r = client.post("/v1/perturb", content=formats.encode_table(table, PARQUET), headers={"content-type": PARQUET})
    assert_error(r, 422, "missing columns ['label']")


def test_perturb_wrong_type_names_the_column(client):
    rows = real_rows()
    rows[1]["age"] = "thirty"
    assert_error(client.post("/v1/perturb", json={"rows": rows}), 422, "'age'", "int64")
    table = formats.rows_to_table(real_rows(), FakeGenerator().schema)
    table = table.set_column(0, "age", pa.array(["a", "b", "c", "d"]))
    r = client.post("/v1/perturb", content=formats.encode_table(table, ARROW), headers={"content-type": ARROW})
    assert_error(r, 422, "'age'", "int64")


@pytest.mark.parametrize(
    "req, fragments",
    [
        ({"rows": []}, ["rows", "at least 1"]),
        ({"rows": [1, 2]}, ["rows", "an object"]),
        ({"rows": real_rows(), "per_example": 0}, ["per_example", "greater than or equal to 1"]),
        ({"rows": real_rows(), "noise": -1}, ["noise", "greater than or equal to 0"]),
        ({"rows": real_rows(), "nosie": 1}, ["nosie", "Extra inputs"]),
    ],
)
def test_perturb_validation_names_the_field(client, req, fragments):
    assert_error(client.post("/v1/perturb", json=req), 422, *fragments)


def test_perturb_body_errors(client):
    assert_error(client.post("/v1/perturb", content=b"{oops", headers={"content-type": "application/json"}), 422, "not valid JSON")
    assert_error(client.post("/v1/perturb", content=b"PAR1garbage", headers={"content-type": PARQUET}), 422, "not a readable")
    assert_error(client.post("/v1/perturb", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"}), 415, "text/csv", PARQUET)
    r = client.post("/v1/perturb?noise=2", json={"rows": real_rows()})
    assert_error(r, 422, "in the body")


def test_perturb_too_many_rows_is_413():
    with client_for(max_rows=10) as c:
        assert_error(c.post("/v1/perturb", json={"rows": real_rows(4), "per_example": 3}), 413, "12 rows", "at most 10")
        table = formats.rows_to_table(real_rows(4), FakeGenerator().schema)
        r = c.post("/v1/perturb?per_example=3", content=formats.encode_table(table, PARQUET), headers={"content-type": PARQUET})
        assert_error(r, 413, "at most 10")


def test_perturb_schema_error_from_generator_is_422():
    with client_for(FakeGenerator(fail=SchemaError("source lacks the bundle's column 'x'"))) as c:
        assert_error(c.post("/v1/perturb", json={"rows": real_rows()}), 422, "lacks the bundle's column")


# --- formats -------------------------------------------------------------------------------------------


def test_choose_media_type():
    assert formats.choose_media_type(None) == formats.JSON
    assert formats.choose_media_type("*/*") == formats.JSON
    assert formats.choose_media_type(f"application/json;q=0.1, {PARQUET}") == PARQUET
    assert formats.choose_media_type(f"{ARROW};q=0, application/*") == formats.JSON
    assert formats.choose_media_type("text/html") is None


def test_json_columns_keep_types_and_nulls():
    table = pa.table(
        {
            "i": pa.array([1, None, 3]),
            "f": pa.array([0.5, float("nan"), None]),
            "b": pa.array([True, None, False]),
            "s": pa.array(["a", None, "€"]),
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
            "img": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.uint8)), 2),
            "png": pa.array([b"\x89PNG", None, b""]),
        }
    )
    rows = orjson.loads(formats.encode_json({}, table))["rows"]
    assert rows[0] == {"i": 1, "f": 0.5, "b": True, "s": "a", "d": "x", "img": [0, 1], "png": "iVBORw=="}
    assert rows[1] == {"i": None, "f": None, "b": None, "s": None, "d": "y", "img": [2, 3], "png": None}
    back = formats.rows_to_table(rows, table.schema.remove(4).insert(4, pa.field("d", pa.string())))
    assert back.column("png").to_pylist() == [b"\x89PNG", None, b""]
    assert back.column("img").to_pylist() == [[0, 1], [2, 3], [4, 5]]


# --- the real generator (tiny trained bundles) ----------------------------------------------------------


@pytest.fixture(scope="module")
def table_client(table_bundle):
    from augment.generator import Generator

    with client_for(Generator.from_path(table_bundle, threads=1)) as c:
        yield c


def test_real_table_bundle_generate_and_perturb(table_client, table_bundle):
    from augment.generator import Generator

    info = table_client.get("/v1/model").json()
    assert info["classes"] == ["no", "yes"] and info["modality"] == "table"
    assert "metrics" in info["training"]
    body = table_client.post("/v1/generate", json={"counts": {"yes": 30, "no": 20}, "seed": 9, "provenance": True}).json()
    gen = Generator.from_path(table_bundle, threads=1)
    expected = pa.concat_tables(
        [gen.sample(s.class_index, s.rows, chunk_rng(9, s.class_index, s.index, 0)) for s in plan_shards({0: 20, 1: 30})]
    )
    assert body["rows"] == orjson.loads(orjson.dumps(expected.to_pylist()))  # NaN -> null as JSON has it
    r = table_client.post("/v1/generate", json={"counts": {"yes": 30, "no": 20}, "seed": 9, "provenance": True},
                          headers={"accept": PARQUET})
    assert pq.read_table(io.BytesIO(r.content)).replace_schema_metadata(None).equals(expected)

    source = [{k: v for k, v in row.items() if not k.startswith("augment_")} for row in body["rows"][:6]]
    out = table_client.post("/v1/perturb", json={"rows": source, "per_example": 2, "noise": 0.3, "seed": 1,
                                                   "provenance": True}).json()["rows"]
    assert len(out) == 12
    assert [row["label"] for row in out] == [row["label"] for row in source for _ in range(2)]
    assert [row["augment_source_row"] for row in out] == [i for i in range(6) for _ in range(2)]


def test_perturb_refuses_numeric_nulls_where_training_had_none(table_client, mixed_table):
    # "age" had no nulls in training ("income" had): a null age is refused, as a null category is, not imputed
    rows = [{k: v for k, v in row.items()} for row in mixed_table.slice(0, 3).to_pylist()]
    rows[1]["age"] = None
    assert_error(table_client.post("/v1/perturb", json={"rows": rows, "per_example": 1}), 422,
                 "'age' holds nulls (first at row 1) but had none in training")
    rows[1]["age"], rows[2]["income"] = 40, None
    assert table_client.post("/v1/perturb", json={"rows": rows, "per_example": 1}).status_code == 200


def test_real_image_bundle_classes_are_strings_of_ints(image_bundle):
    from augment.generator import Generator

    with client_for(Generator.from_path(image_bundle, threads=1)) as c:
        info = c.get("/v1/model").json()
        assert info["classes"] == list(range(10)) and info["class_names"] == [str(i) for i in range(10)]
        body = c.post("/v1/generate", json={"counts": {"3": 2}, "seed": 0}).json()
        assert [row["label"] for row in body["rows"]] == [3, 3]
        assert len(body["rows"][0]["image"]) == 64 and all(0 <= p <= 255 for p in body["rows"][0]["image"])
        assert c.post("/v1/generate", json={"n": 2, "class": 3, "seed": 0}).json()["rows"] == body["rows"]
        assert_error(c.post("/v1/generate", json={"counts": {"10": 1}}), 422, "known classes: '0', '1'")
        source = [{k: v for k, v in row.items() if not k.startswith("augment_")} for row in body["rows"]]
        arrow = c.post("/v1/perturb", json={"rows": source, "per_example": 2, "seed": 4}, headers={"accept": ARROW})
        out = pa.ipc.open_stream(arrow.content).read_all()
        assert out.num_rows == 4 and out.schema.field("image").type == pa.list_(pa.uint8(), 64)


def test_generate_and_perturb_give_the_rows_augment_generate_writes(table_client, table_bundle, tmp_path):
    """Same bundle, seed and counts (or source rows): the service's rows are the batch job's files, in plan order."""
    from augment.generator import Generator
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec

    gen = Generator.from_path(table_bundle, threads=1)
    quiet = dict(engine="local", progress=False, echo=lambda *_: None)
    run_job(gen, JobSpec(mode="sample", counts=((0, 70), (1, 130)), seed=21), tmp_path / "sample", **quiet)
    job = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "sample").glob("*.parquet"))])
    r = table_client.post("/v1/generate", json={"counts": {"yes": 130, "no": 70}, "seed": 21}, headers={"accept": PARQUET})
    served = pq.read_table(io.BytesIO(r.content))
    assert served.to_pylist() == job.to_pylist()

    source = job.drop_columns([c for c in job.column_names if c.startswith("augment_")]).slice(0, 50)
    pq.write_table(source, tmp_path / "source.parquet")
    spec = JobSpec(mode="perturb", source=str(tmp_path / "source.parquet"), per_example=3, noise=0.4, seed=8)
    run_job(gen, spec, tmp_path / "perturb", **quiet)
    job = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "perturb").glob("*.parquet"))])
    r = table_client.post("/v1/perturb?per_example=3&noise=0.4&seed=8", content=formats.encode_table(source, PARQUET),
                          headers={"content-type": PARQUET, "accept": PARQUET})
    assert r.status_code == 200, r.text
    assert pq.read_table(io.BytesIO(r.content)).to_pylist() == job.to_pylist()


# --- the command line and imports ------------------------------------------------------------------------


def test_serve_cli_errors_are_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from augment.cli import cli

    monkeypatch.delenv("AUGMENT_TEST_UNSET_KEY", raising=False)
    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "nope")])  # a path or a URI: checked by loading
    assert r.exit_code == 1 and "bundle folder not found" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--api-key-env", "AUGMENT_TEST_UNSET_KEY"])
    assert r.exit_code == 1 and "AUGMENT_TEST_UNSET_KEY" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path)])  # a folder that is no bundle
    assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--max-rows", "0"])
    assert r.exit_code == 2 and "--max-rows" in r.output


def test_serving_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, serving.app, serving.ray_app, serving.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
