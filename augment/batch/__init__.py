"""The batch job behind ``augment generate``: spec -> plan -> shards decoded and written by an engine -> manifest.

```
spec.py      JobSpec: everything that decides the bytes (mode, counts, seed, sampler, filters ...)
counts.py    rows per class from --per-class / --class-counts / --balance / --rows
plan.py      shards and their seeds (plan_job); the one planner every door goes through
source.py    the --from rows of perturb and interpolate jobs
chunks.py    one shard decoded in memory, chunk by chunk (the batch job, the service and the API share it)
write.py     shards written atomically: decode lanes, a Parquet writer thread
manifest.py  the output folder: _job.json while it runs, _manifest.json last
engines.py   local (in process, or a process pool) and Ray
run.py       run_job: plan, check, run the engine, write the manifest
```

Only the leaf modules are imported here, so importing the package stays cheap and nothing imports back.
"""

from augment.batch.counts import resolve_counts
from augment.batch.plan import Shard, plan_job
from augment.batch.spec import JobSpec

__all__ = ["JobSpec", "Shard", "plan_job", "resolve_counts"]
