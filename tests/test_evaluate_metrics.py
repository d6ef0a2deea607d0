"""Fidelity, utility and privacy metrics against hand-computed values on tiny examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from augment.evaluate import metrics as M
from augment.evaluate.data import feature_frame, infer_schema
from augment.evaluate.privacy import PrivacyFilter, privacy_report
from augment.evaluate.utility import augmentation_sweep, parse_real_sizes, score_classifier


def test_ks_of_a_shifted_column():
    # ECDFs of [1,2,3,4] and [3,4,5,6] differ most at x = 2: 0.5 - 0 (and 1 - 0.5 at x = 4)
    assert M.ks_statistic(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(0.5)
    assert M.ks_statistic(np.array([1.0, 2, np.nan]), np.array([1.0, 2])) == 0.0  # nulls dropped
    assert M.ks_statistic(np.array([0.0, 1]), np.array([5.0, 6])) == 1.0


def test_tvd_small_example():
    # p = (x .5, y .25, z .25), q = (x .25, y .75, z 0): 0.5 * (.25 + .5 + .25) = 0.5
    assert M.tvd(["x", "x", "y", "z"], ["x", "y", "y", "y"]) == pytest.approx(0.5)
    assert M.tvd(["a", "b"], ["b", "a"]) == 0.0


def test_cramers_v_small_tables():
    assert M.cramers_v(np.array([[10, 0], [0, 10]])) == pytest.approx(1.0)
    assert M.cramers_v(np.array([[5, 5], [5, 5]])) == pytest.approx(0.0)
    # n = 30, every expected count 7.5: chi2 = 4 * 2.5^2 / 7.5 = 10/3; V = sqrt(10/3 / 30) = 1/3
    assert M.cramers_v(np.array([[10, 5], [5, 10]])) == pytest.approx(1 / 3)
    assert M.cramers_v(np.array([[3, 4]])) == 0.0  # one row: no association
    assert M.contingency(["a", "a", "b"], ["u", "v", "v"]).tolist() == [[1, 1], [0, 1]]


def _table(x, y, c, label):
    return pa.table({"x": pa.array(x, pa.float64()), "y": pa.array(y, pa.float64()), "c": c, "label": label})


def test_identical_data_scores_one(mixed_table):
    schema = infer_schema(mixed_table, "label")
    f = feature_frame(mixed_table, schema)
    shapes = M.column_shapes(f, f, schema)
    assert shapes["score"] == 1.0 and set(shapes["columns"]) == set(schema.features)
    assert M.column_pair_trends(f, f, schema)["score"] == pytest.approx(1.0)
    x = np.column_stack([f[c].to_numpy() for c in schema.numeric])
    auc = M.detection_auc(x, x.copy(), seed=0, cap=1000)["auc"]
    assert 0.35 < auc < 0.65


def test_shifted_column_shape_and_reversed_correlation():
    label = ["a", "b"] * 2
    real = _table([1, 2, 3, 4], [1, 2, 3, 4], ["u", "u", "v", "v"], label)
    syn = _table([3, 4, 5, 6], [4, 3, 2, 1], ["u", "v", "v", "v"], label)
    schema = infer_schema(real, "label")
    fr, fs = feature_frame(real, schema), feature_frame(syn, schema)
    shapes = M.column_shapes(fr, fs, schema)
    assert shapes["columns"]["x"]["score"] == pytest.approx(0.5)  # 1 - KS
    assert shapes["columns"]["y"]["score"] == 1.0  # same values, other order
    assert shapes["columns"]["c"]["score"] == pytest.approx(0.75)  # 1 - TVD(.5/.5, .25/.75)
    pairs = {tuple(p["columns"]): p for p in M.column_pair_trends(fr, fs, schema)["pairs"]}
    assert pairs[("x", "y")]["real"] == pytest.approx(1.0) and pairs[("x", "y")]["synthetic"] == pytest.approx(-1.0)
    assert pairs[("x", "y")]["score"] == pytest.approx(0.0)  # 1 - |1 - (-1)| / 2
    assert pairs[("x", "c")]["metric"] == "cramers_v"


def test_detection_separates_different_data_and_skips_tiny_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (300, 3)), rng.normal(3, 1, (300, 3))
    assert M.detection_auc(a, b, seed=0, cap=300)["auc"] > 0.95
    skipped = M.detection_auc(a[:5], b, seed=0, cap=300)
    assert "at least 20" in skipped["skipped"]


def test_constant_real_column_pair_is_skipped_with_reason():
    real = _table([1, 1, 1, 1], [1, 2, 3, 4], ["u", "u", "v", "v"], ["a", "b"] * 2)
    schema = infer_schema(real, "label")
    f = feature_frame(real, schema)
    out = M.column_pair_trends(f, f, schema)
    assert out["skipped_pairs"][0]["columns"] == ["x", "y"] and "constant" in out["skipped_pairs"][0]["reason"]


class _Fixed:
    def __init__(self, proba):
        self.classes_ = np.array([0, 1])
        self._p = proba

    def predict_proba(self, x):
        return self._p


def test_scores_and_missing_test_class():
    model = _Fixed(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    s = score_classifier(model, np.zeros((4, 1)), np.array([0, 1, 1, 0]), ("no", "yes"))
    assert s["accuracy"] == 0.5 and s["per_class_recall"] == {"no": 0.5, "yes": 0.5}
    assert s["roc_auc"] == pytest.approx(0.75)  # positives 0.8, 0.4 vs negatives 0.1, 0.7: 3 of 4 pairs ordered
    one = score_classifier(model, np.zeros((4, 1)), np.array([0, 0, 0, 0]), ("no", "yes"))
    assert "single class" in one["roc_auc"]["skipped"] and "absent" in one["per_class_recall"]["yes"]["skipped"]


def test_sweep_skips_cells_without_enough_synthetic_rows(mixed_table):
    schema = infer_schema(mixed_table, "label")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 2)) + np.arange(2), np.repeat([0, 1], 100)
    x[y == 1] += 1.5
    syn = np.r_[0:30, 100:130]  # 30 rows of each class
    out = augmentation_sweep((x, y), (x[syn], y[syn]), (x, y), schema=schema, sizes=["10%", "100%"],
                             multipliers=[0, 1], seeds=[0], cap=10_000)
    cells = {(c["real"], c["synthetic_multiplier"]): c for c in out["cells"]}
    assert "needs 100 synthetic rows" in cells[("100%", 1)]["skipped"]
    assert isinstance(cells[("10%", 1)]["roc_auc"], float)
    assert out["best"]["10%"]["multiplier"] in (0, 1)
    with pytest.raises(ValueError, match="percentage"):
        parse_real_sizes("ten")


def test_privacy_flags_a_copied_training_set(mixed_table):
    schema = infer_schema(mixed_table, "label")
    train, holdout = mixed_table.slice(0, 250), mixed_table.slice(250)
    copied = privacy_report(train, holdout, train, schema, seed=0, cap=500, reference_cap=10_000)
    assert copied["too_close"] and copied["exact_copies_synthetic"] == 1.0 and copied["dcr_synthetic"]["median"] == 0.0
    from conftest import make_mixed_table

    fresh = privacy_report(train, holdout, make_mixed_table(300, seed=5), schema, seed=0, cap=500, reference_cap=10_000)
    assert not fresh["too_close"], fresh["too_close_reasons"]
    tiny = privacy_report(train, holdout.slice(0, 5), train, schema, seed=0, cap=500, reference_cap=10_000)
    assert "at least 20" in tiny["skipped"]


def test_privacy_filter_drops_copies_and_keeps_new_rows(mixed_table):
    train, holdout = mixed_table.slice(0, 250), mixed_table.slice(250)
    flt = PrivacyFilter.calibrate(train, holdout, label="label", quantile=0.05)
    assert flt.threshold > 0 and flt.quantile == 0.05
    assert not flt.keep_mask(train.slice(0, 20)).any()  # distance 0 to themselves
    kept = flt.filter(holdout)
    assert 0.85 * holdout.num_rows <= kept.num_rows < holdout.num_rows  # about 95% of new real rows survive
    extra = holdout.append_column("augment_mode", pa.array(["sample"] * holdout.num_rows))
    assert flt.keep_mask(extra).tolist() == flt.keep_mask(holdout).tolist()  # provenance columns ignored
    assert PrivacyFilter.fit(train, label="label", threshold=0.0).keep_mask(train).all()


def test_privacy_filter_within_category_groups_equals_brute_force(mixed_table):
    from augment.evaluate.privacy import _keep_within_groups, closest_distances

    train, queries = mixed_table.slice(0, 250), mixed_table.slice(150)  # 100 copies of training rows, 150 new
    flt = PrivacyFilter.fit(train, label="label", threshold=0.0)
    assert flt._groups is not None  # the table has categories: the grouped path is the one taken below
    d = closest_distances(flt.reference, flt.space.transform(queries))
    for threshold in (0.0, 0.05, float(np.quantile(d, 0.5)), 0.999, 1.0):
        flt.threshold = threshold
        assert flt.keep_mask(queries).tolist() == (d >= threshold).tolist(), threshold
        small = _keep_within_groups(flt.reference, flt._groups, flt.space.transform(queries), threshold, max_pairs=7)
        assert small.tolist() == (d >= threshold).tolist(), threshold  # many slices, same rows
    flt.threshold = 1.5  # past 1, rows of other categories may be closer: brute force
    assert flt.keep_mask(queries).tolist() == (d >= 1.5).tolist()
