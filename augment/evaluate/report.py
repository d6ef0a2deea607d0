"""Write an evaluation to a folder: ``metrics.json``, ``index.html`` and ``figures/*.png`` beside it.

The HTML has no scripts and no external links: it references only the PNG files written next to it, so the
folder can be zipped, attached or served as it is.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path

import numpy as np

from augment.errors import OutputExistsError
from augment.evaluate.data import is_skipped
from augment.evaluate.suite import Evaluation

__all__ = ["write_report", "summary_rows", "format_value"]

FIG_DIR = "figures"


def _jsonable(node):
    if isinstance(node, dict):
        return {str(k): _jsonable(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_jsonable(v) for v in node]
    if isinstance(node, (np.integer,)):
        return int(node)
    if isinstance(node, (np.floating, float)):
        v = float(node)
        if not math.isfinite(v):  # never a silent NaN: this is a bug upstream, say so in the file
            return {"skipped": "not a finite number"}
        return v
    if isinstance(node, np.bool_):
        return bool(node)
    return node


def format_value(v, digits: int = 3) -> str:
    if is_skipped(v):
        return f"skipped: {v['skipped']}"
    if isinstance(v, bool):
        return "YES" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "-" if v is None else str(v)


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """The headline numbers as (name, formatted value) rows, for the terminal and the top of the report."""
    fid, util, priv = metrics["fidelity"], metrics["utility"], metrics["privacy"]
    tt = util["tstr_trtr"]
    rows = [
        ("column shapes (1 = same marginals)", _get(fid, "column_shapes", "score")),
        ("column pair trends (1 = same associations)", _get(fid, "column_pair_trends", "score")),
        ("detection AUC (0.5 = indistinguishable)", _get(fid, "detection", "auc") if not is_skipped(fid["detection"]) else fid["detection"]),
    ]
    if is_skipped(tt):
        rows.append(("utility", tt))
    else:
        for key in ("accuracy", "macro_f1", "roc_auc"):
            trtr = tt["trtr"] if is_skipped(tt["trtr"]) else tt["trtr"][key]
            tstr = tt["tstr"] if is_skipped(tt["tstr"]) else tt["tstr"][key]
            ratio = tt["ratio"] if is_skipped(tt["ratio"]) else tt["ratio"][key]
            rows.append((f"{key}: TRTR / TSTR / ratio", f"{format_value(trtr)} / {format_value(tstr)} / {format_value(ratio)}"))
    sweep = util["sweep"]
    if is_skipped(sweep):
        rows.append(("augmentation sweep", sweep))
    for size, best in sweep["best"].items():
        if is_skipped(best):
            rows.append((f"augmentation, real {size}", best))
        else:
            rows.append((f"augmentation, real {size}: best multiplier ({sweep['metric']} gain)",
                         f"{best['multiplier']}x ({best['gain']:+.4f})"))
    if is_skipped(priv):
        rows.append(("privacy", priv))
    else:
        rows += [
            ("DCR median: synthetic / held-out", f"{priv['dcr_synthetic']['median']:.4f} / {priv['dcr_holdout']['median']:.4f}"),
            ("DCR 5th pct: synthetic / held-out", f"{priv['dcr_synthetic']['p5']:.4f} / {priv['dcr_holdout']['p5']:.4f}"),
            ("exact copies of training rows: synthetic / held-out", f"{priv['exact_copies_synthetic']:.2%} / {priv['exact_copies_holdout']:.2%}"),
            ("synthetic closer to training than held-out", priv["too_close"]),
        ]
    return [(name, v if isinstance(v, str) else format_value(v)) for name, v in rows]


def write_report(evaluation: Evaluation, out: str | Path, *, overwrite: bool = False, title: str = "augment evaluation") -> Path:
    """Write metrics.json, figures/*.png and index.html into ``out``; returns the HTML path."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"report folder {out} exists and is not empty; pass --overwrite to replace it")
        for name in ("metrics.json", "index.html"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / FIG_DIR, ignore_errors=True)
    (out / FIG_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in evaluation.figures.items():
        fig.savefig(out / FIG_DIR / name, dpi=100)  # a plain Figure: nothing to close in pyplot
        written.append(f"{FIG_DIR}/{name}")
    metrics = _jsonable({**evaluation.metrics, "figures": written})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    page = out / "index.html"
    page.write_text(_html(metrics, title))
    return page


# ----------------------------------------------------------------------------------------------- html
def _table(rows, header=None) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _img(metrics, name, caption) -> str:
    path = f"{FIG_DIR}/{name}"
    if path not in metrics["figures"]:
        return ""
    return f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{color:#555}
.warn{color:#a40000;font-weight:bold}"""


def _html(m: dict, title: str) -> str:
    e, fv = html.escape, format_value
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>Modality <b>{e(m['modality'])}</b>, label <code>{e(m['label'])}</code>; rows: "
             + ", ".join(f"{k} {v:,}" for k, v in m["rows"].items()) + ".</p>"]
    for w in m["warnings"]:
        parts.append(f"<p class='warn'>Warning: {e(w)}</p>")
    parts += ["<h2>Summary</h2>", _table(summary_rows(m), ["metric", "value"])]
    cc = m["class_counts"]
    parts.append(_table([[c] + [cc[p].get(c, 0) for p in cc] for c in next(iter(cc.values()))], ["class"] + list(cc)))

    fid = m["fidelity"]
    parts.append("<h2>Fidelity</h2><p>Synthetic rows against the real training rows.</p>")
    if "per_class" in fid:
        auc = lambda v: fv(v["detection"]["auc"]) if not is_skipped(v["detection"]) else fv(v["detection"])
        if m["modality"] == "table":
            rows = [[c, fv(v["column_shapes"]), fv(v["column_pair_trends"]), auc(v)] for c, v in fid["per_class"].items()]
            parts.append(_table(rows, ["class", "column shapes", "column pair trends", "detection AUC"]))
        else:
            parts.append(_table([[c, auc(v)] for c, v in fid["per_class"].items()], ["class", "detection AUC"]))
    parts += [_img(m, "column_shapes.png", "Per-column score"), _img(m, "worst_columns.png", "The columns whose marginals differ most"),
              _img(m, "association_difference.png", "Where pairwise associations differ"),
              _img(m, "samples.png", "Per-class samples, real vs synthetic"), _img(m, "latent_map.png", "Latent space of the test set. In a conditional VAE the label is given to the decoder, so the "
                   "latent code carries style rather than class: overlapping classes are expected here."),
              _img(m, "interpolation.png", "Interpolation strips")]

    util = m["utility"]
    parts.append("<h2>Utility</h2><p>Classifiers trained on real (TRTR) or synthetic (TSTR) rows, scored on the real test set.</p>")
    tt = util["tstr_trtr"]
    if not is_skipped(tt) and not is_skipped(tt["trtr"]) and not is_skipped(tt["tstr"]):
        rows = [[c, fv(tt["trtr"]["per_class_recall"][c]), fv(tt["tstr"]["per_class_recall"][c])] for c in tt["trtr"]["per_class_recall"]]
        parts.append(_table(rows, ["class", "recall TRTR", "recall TSTR"]))
    sweep = util["sweep"]
    rows = [[c["real"], f"{c['synthetic_multiplier']}x", fv(c.get("accuracy", c)), fv(c.get("macro_f1", c)), fv(c.get("roc_auc", c))]
            for c in sweep["cells"]]
    if is_skipped(sweep):
        parts += ["<h3>Augmentation sweep</h3>", f"<p>Skipped: {e(sweep['skipped'])}</p>"]
    else:
        parts += ["<h3>Augmentation sweep</h3>", _table(rows, ["real subset", "synthetic", "accuracy", "macro F1", "ROC AUC"]),
                  _img(m, "sweep.png", "Augmentation sweep")]

    parts.append("<h2>Privacy</h2>")
    priv = m["privacy"]
    if is_skipped(priv):
        parts.append(f"<p>Skipped: {e(priv['skipped'])}</p>")
    else:
        flag = "<p class='warn'>Synthetic rows sit closer to the training rows than new real rows do: " + e("; ".join(priv["too_close_reasons"])) + "</p>"
        parts.append(flag if priv["too_close"] else "<p>Synthetic rows are not closer to the training rows than held-out real rows are.</p>")
        parts.append(_img(m, "dcr.png", "Distance to closest training record"))
    if m["skipped"]:
        parts += ["<h2>Skipped metrics</h2>", _table([[s["metric"], s["reason"]] for s in m["skipped"]], ["metric", "reason"])]
    parts += ["<h2>Settings</h2>", _table([[k, str(v)] for k, v in m["settings"].items()], ["setting", "value"]),
              "<p>Full numbers: <a href='metrics.json'>metrics.json</a>.</p></body></html>"]
    return "\n".join(p for p in parts if p)
