"""SDV's TVAE sampling rate on this machine, for the "x TVAE" columns of bench_wide.py (``--tvae PYTHON``).

    /path/to/python-with-sdv benchmarks/tvae_rate.py --data adult_like.parquet --rows 1000000 [--impl sdv|ctgan]

Run under an interpreter that has ``sdv`` (or only ``ctgan``); neither is a dependency of augment. ``sdv``:
``TVAESynthesizer`` with metadata detected from the table, what the issue's 90.7k rows/s measured; ``ctgan``:
the ``ctgan.TVAE`` that SDV wraps, without SDV's reversible transforms around it (faster: the stricter
reference). TVAE is fitted for one epoch with its default network (its sampling speed depends on the widths
of its data transformer and networks, not on what the weights learned, as for augment's decoder) and
``sample`` of ``--rows`` rows is timed in memory (a pandas DataFrame; no file written) on all cores, best of
``--repeat``. For ``ctgan`` the nulls of a categorical column are a value of their own (``"<null>"``): its
one-hot encoder takes no missing values; SDV handles them itself. Prints one JSON line: {"rows_per_s": ...,
"fit_s": ..., "threads": ..., "impl": ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import pyarrow.parquet as pq
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--impl", choices=["sdv", "ctgan"], default="sdv")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    table = pq.read_table(a.data)
    df = table.to_pandas()
    t0 = time.perf_counter()
    if a.impl == "sdv":
        from sdv.metadata import Metadata
        from sdv.single_table import TVAESynthesizer

        metadata = Metadata.detect_from_dataframes({"table": df})
        model = TVAESynthesizer(metadata, epochs=1, enable_gpu=False)
        model.fit({"table": df})  # sdv 2: one table, named
        sample = lambda n: model.sample(num_rows=n)["table"]  # noqa: E731  (sdv 2: a dict of tables)
    else:
        from ctgan import TVAE

        discrete = [f.name for f in table.schema if str(f.type) == "string"]
        for name in discrete:
            df[name] = df[name].fillna("<null>")
        model = TVAE(epochs=1, enable_gpu=False)
        model.fit(df, discrete_columns=discrete)
        sample = model.sample
    fit_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(max(1, a.repeat)):
        t0 = time.perf_counter()
        out = sample(a.rows)
        best = min(best, time.perf_counter() - t0)
        assert len(out) == a.rows
    print(json.dumps({"rows_per_s": a.rows / best, "fit_s": fit_s, "threads": torch.get_num_threads(),
                      "impl": a.impl}))


if __name__ == "__main__":
    main()
