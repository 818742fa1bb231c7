"""Executing one notebook: parameters, kernels (pool, fork server), the papermill engine, recording in MLflow.

The layer everything else stands on, after the leaf modules (config, errors, tags, limits, kinds). It knows
nothing of jobs, queues or workers: `executor.execute` runs a notebook with parameters and records the run;
`params` reads and validates a notebook's parameters; `kernels`, `pool` and `forkserver` start kernels;
`engine` is the papermill engine; `recording` writes the MLflow run; `hashing` computes file/directory md5s
and the git state; `outputs` places output parameters' files; `cell_outputs` normalises outputs for
comparison; `runcache` finds a previous identical run; `artifacts` stores files in S3 or a folder;
`checks` probes MLflow and S3; `progress` is the one progress bar.
"""
