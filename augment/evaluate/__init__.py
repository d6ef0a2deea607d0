"""Is the synthetic data good, useful and private? Metrics, figures and the HTML report of `augment evaluate`.

```python
from augment.evaluate import run_evaluation, write_report, read_real, read_synthetic
ev = run_evaluation(read_real("train.parquet"), read_real("test.parquet"), read_synthetic("synth/"), label="y")
write_report(ev, "reports/bank")
```

Modules: ``data`` (reading, column kinds), ``metrics`` (fidelity), ``utility`` (TSTR / TRTR, augmentation
sweep), ``privacy`` (distance to closest record, ``PrivacyFilter`` for generation), ``figures``, ``suite``
(runs everything), ``report`` (metrics.json + index.html). Needs scikit-learn and matplotlib, never torch.
"""

from augment.evaluate.data import read_real, read_synthetic
from augment.evaluate.privacy import PrivacyFilter
from augment.evaluate.report import summary_rows, write_report
from augment.evaluate.suite import EvalConfig, Evaluation, run_evaluation

__all__ = ["read_real", "read_synthetic", "run_evaluation", "write_report", "summary_rows", "EvalConfig", "Evaluation", "PrivacyFilter"]
