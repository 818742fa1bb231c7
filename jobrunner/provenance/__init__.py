"""Where a model or a run came from, how two runs differ, and whether a run reproduces.

`lineage` walks registry references (`name@alias`, versions, runs) to their runs, notebooks, commits and
data; `diff` compares two runs (parameters, metrics, cell outputs; `diff_html` renders it); `verify`
re-executes a recorded run and compares (`verify_data`, `verify_outputs`, `verify_report` are its parts).
"""
