"""The API's own store: the prediction log, feedback labels and the retraining trigger's state.

`db` makes the engine (from jobrunner's one engine factory, with the API's pool and JSON settings), runs
the Alembic migrations in serve/migrations (version table `serve_alembic_version`, apart from jobrunner's)
and holds the helpers every query module shares; `models` are the tables and the typed row a request
writes to the prediction log; `predictions` stores and reads the prediction log (one row per request,
prediction ids `<batch id>-<row index>`); `feedback` records true labels and computes the live metric over
a window; `retrain` is the debounce state of the retraining trigger (one conditional UPDATE per crossing).
Routes and the background writer call these functions; nothing else builds queries on these tables
except the read-only monitoring history (serve/routes/monitoring.py).
"""
