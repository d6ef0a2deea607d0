"""``augment info BUNDLE``: what a bundle holds, for a person or (``--json``) for a program."""

from __future__ import annotations

import json

import click

from augment.cli import run_command

__all__ = ["info", "summarize"]


def summarize(bundle) -> dict:
    meta = bundle.json
    training = meta.get("training", {})
    return {
        "path": bundle.source,
        "bundle_sha256": bundle.sha256,
        "format_version": meta["format_version"],
        "augment_version": meta.get("augment_version"),
        "modality": meta["modality"],
        "columns": [{"name": f.name, "type": str(f.type), **_model_of(meta, f.name)} for f in bundle.schema],
        "dropped": list(meta["codec"].get("dropped", [])),
        "identifiers": [c["name"] for c in meta["codec"]["columns"] if c["kind"] == "identifier"],
        "label": meta["label"],
        "latent_dim": meta["latent_dim"],
        "sampler": {"default": meta["sampler"]["default"],
                    "mixture_components": [len(c["weights"]) for c in meta["sampler"]["mixture"]["classes"]],
                    "condition_on": {name: {"kind": entry["kind"], "values": [len(c["values"]) for c in entry["classes"]]}
                                     for name, entry in meta["sampler"].get("native", {}).get("columns", {}).items()}},
        "onnx": {"opset": meta["onnx"]["opset"], "files": meta["onnx"]["files"], "parity": meta["onnx"].get("parity")},
        "training": {"config": training.get("config"), "metrics": training.get("metrics"), "source": training.get("source")},
    }


def _model_of(meta: dict, name: str) -> dict:
    """How the codec models a column: its kind, and its categories or point masses ("spikes")."""
    for col in meta["codec"]["columns"]:
        if col["name"] == name:
            out = {"model": col["kind"]}
            if col["kind"] == "categorical":
                out["categories"] = len(col["categories"])
            if col.get("spikes"):
                out["spikes"] = col["spikes"]
            if col.get("specials"):
                out["states"] = col["specials"]
            if col.get("rare"):
                out["rare"] = col["rare"]
            if col["kind"] == "identifier":
                from augment.columns import IdentifierColumn

                ident = IdentifierColumn.from_json(col)
                out["format"], out["space"], out["rows_max"] = ident.format, ident.size, ident.rows_max
            return out
    return {"model": "label"} if name == meta["label"]["column"] else {}


def _describe(col: dict) -> str:
    what = col.get("model", "")
    if "categories" in col:
        what += f", {col['categories']} categories"
    if col.get("spikes"):
        what += ", point masses at " + ", ".join(map(str, col["spikes"]))
    if col.get("states"):
        what += ", also " + ", ".join(col["states"])
    if col.get("rare"):
        r = col["rare"]
        what += (f", {r['values']:,} rare values ({r['rows']:,} rows, < {r['min_rows']} rows each) written as "
                 + ("the nearest common value" if r["stand_in"] == "nearest" else repr(r["stand_in"])))
    if col.get("format"):
        what += f", generated fresh as {col['format']} ({col['space']:,} values, at most {col['rows_max']:,} rows a job)"
    return f"  {col['name']}: {col['type']}" + (f"  ({what})" if what else "")


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@run_command
def info(bundle_path, as_json):
    """Show what a bundle holds: schema, classes, sampler, training metrics."""
    from augment.bundle import load_bundle

    s = summarize(load_bundle(bundle_path))
    if as_json:
        click.echo(json.dumps(s, indent=2, ensure_ascii=False))
        return
    label = s["label"]
    m = s["training"]["metrics"] or {}
    c = s["training"]["config"] or {}
    lines = [
        f"bundle     {s['path']}  (format {s['format_version']}, augment {s['augment_version']}, sha256 {s['bundle_sha256'][:16]})",
        f"modality   {s['modality']}, latent dim {s['latent_dim']}, sampler {s['sampler']['default']} "
        f"({'/'.join(map(str, s['sampler']['mixture_components']))} mixture components per class)",
        f"label      {label['column'] or '(none: unconditional)'}, {len(label['classes'])} classes",
    ]
    lines[-1:-1] = [f"           --condition-on {name}: a latent mixture for {'/'.join(map(str, e['values']))} of its "
                    f"{'values' if e['kind'] == 'categories' else 'quantile bins'} per class (--where on it draws "
                    "from them)" for name, e in s["sampler"]["condition_on"].items()]
    width = max(len(str(k)) for k in label["classes"])
    lines += [f"  {str(k):<{width}}  {n:>9,} training rows" for k, n in zip(label["classes"], label["counts"])]
    lines.append("columns")
    lines += [_describe(col) for col in s["columns"]]
    if s["dropped"]:
        lines.append(f"dropped    {', '.join(s['dropped'])}  (--drop: not modelled, not generated)")
    if m:
        lines.append(
            f"training   {m.get('rows', 0):,} rows, {m.get('epochs_run')} epochs ({m.get('stopped')}), "
            f"{m.get('train_wall_s')} s, val loss {m.get('val_loss', float('nan')):.4f} (recon {m.get('val_recon', float('nan')):.4f}, "
            f"KL {m.get('val_kl', float('nan')):.3f}), beta {c.get('beta')}, seed {c.get('seed')}"
            + (f", image jitter {c['image_jitter']:g}" if s["modality"] == "image" and c.get("image_jitter") is not None else "")
        )
    parity = s["onnx"]["parity"] or {}
    lines.append(f"onnx       opset {s['onnx']['opset']}, parity max abs diff "
                 f"{max(parity.get('encoder_max_abs_diff', 0), parity.get('decoder_max_abs_diff', 0)):.1e}")
    click.echo("\n".join(lines))
