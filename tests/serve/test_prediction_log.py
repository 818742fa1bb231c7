"""The background prediction writer: batches, drains on close, and never lets one bad record block the
rest."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from serve.prediction_log import PredictionWriter
from serve.store import db, models, predictions


def record(i: int, features: object) -> dict:
    return {
        "id": f"{i:032x}", "created_at": datetime.now(UTC), "model_name": "m", "model_version": "1",
        "model_alias": "champion", "run_id": None, "trace_id": None, "n_rows": 1, "features": features,
        "labels": [1], "probabilities": np.array([[0.2, 0.8]]),
    }  # fmt: skip


def test_close_drains_everything_and_a_bad_record_is_dropped_alone(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate(engine)
    writer = PredictionWriter(engine, batch_size=1000, flush_interval=60)  # only close() will write
    writer.start()
    good_matrix = np.arange(60.0).reshape(2, 30)[:, ::-1]  # non-contiguous, as a reordered compact body
    for i in range(50):
        writer.submit(record(i, good_matrix if i % 2 else [[float(i)] * 30]))
    writer.submit(record(999, object()))  # cannot be serialised
    assert db.count_rows(engine, models.PredictionBatch) == 0
    writer.close(timeout=20)
    assert db.count_rows(engine, models.PredictionBatch) == 50
    assert writer.dropped == 1 and writer.pending == 0
    stored = predictions.get_prediction(engine, f"{1:032x}-0")
    assert stored.features == list(good_matrix[0]) and stored.probabilities == [0.2, 0.8]


def test_api_workers_starting_together_on_one_sqlite_file_all_migrate_it(tmp_path):
    """Several uvicorn worker processes migrate the same SQLite database at the same moment (SQLite has
    no advisory lock: SQLite's busy timeout and migrate's retry on OperationalError keep it safe)."""
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'race.db'}"
    go = time.time() + 3  # every process imports first, then all migrate at this moment
    code = (
        f"import time; from serve.store import db; e = db.make_engine({url!r}); "
        f"time.sleep(max(0, {go} - time.time())); db.migrate(e); print('migrated')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in results]
    assert all(out.strip() == "migrated" for out, _ in results)
    engine = db.make_engine(url)
    assert db.count_rows(engine, models.PredictionBatch) == 0  # the table exists, at head
