"""Submission and the job store on real PostgreSQL (and SQLite in embedded mode): validation before
acceptance, job + outbox in one transaction, idempotency keys, listing, cancelling, not-found errors."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from jobrunner.errors import InvalidTransition, JobNotFound, NotebookNotFound, ParameterError
from tests.jobrunner.support import LATEST_MIGRATION as LATEST

pytestmark = pytest.mark.services


def _count(settings, model) -> int:
    from jobrunner.store.db import session_scope

    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migrate_is_idempotent_and_unmigrated_postgres_is_a_clear_error(
    project, make_postgres_db, monkeypatch
):
    from jobrunner.config import get_settings
    from jobrunner.errors import StoreUnavailable
    from jobrunner.jobs import submit
    from jobrunner.store.db import dispose_engines, migrate

    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", make_postgres_db())
    get_settings.cache_clear()
    with pytest.raises(StoreUnavailable, match="jobrunner migrate"):
        submit("notebooks/ok.ipynb", {"x": 1})
    assert migrate(get_settings()) == LATEST
    assert migrate(get_settings()) == LATEST
    assert submit("notebooks/ok.ipynb", {"x": 1}).state.value == "QUEUED"
    dispose_engines()


def test_a_store_at_an_older_revision_is_refused_until_migrated_and_keeps_its_jobs(
    project, make_postgres_db, monkeypatch
):
    from alembic import command
    from sqlalchemy import text

    from jobrunner.config import get_settings
    from jobrunner.errors import StoreNotMigrated
    from jobrunner.jobs import get_job, submit
    from jobrunner.store.db import _alembic_config, dispose_engines, get_engine, migrate

    url = make_postgres_db()
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", url)
    get_settings.cache_clear()
    cfg = _alembic_config()
    with get_engine(url).begin() as conn:  # a store made by the previous release, with a queued job
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001_jobs")
        conn.execute(
            text(
                "INSERT INTO jobs (id, notebook, parameters, state, attempt, created_at, updated_at, "
                "queued_at, cells_done) VALUES ('old-job', 'notebooks/ok.ipynb', '{\"x\": 1}', "
                "'QUEUED', 0, now(), now(), now(), 0)"
            )
        )
    with pytest.raises(StoreNotMigrated, match=f"revision 0001_jobs.*needs {LATEST}.*jobrunner migrate"):
        submit("notebooks/ok.ipynb", {"x": 1})
    assert migrate(get_settings()) == LATEST
    old = get_job("old-job")
    assert old.state.value == "QUEUED" and old.parameters == {"x": 1} and old.timeout_seconds is None
    assert submit("notebooks/ok.ipynb", {"x": 2}, timeout=30).timeout_seconds == 30
    dispose_engines()


def test_submit_writes_job_and_outbox_message_together(pg_settings):
    from jobrunner.jobs import get_job, submit
    from jobrunner.store.models import Job, Outbox

    job = submit("notebooks/ok.ipynb", {"x": 3, "y": 1}, submitter="ada", settings=pg_settings)
    assert job.state.value == "QUEUED" and job.attempt == 0 and job.submitter == "ada"
    assert job.parameters == {"x": 3, "y": 1.0}  # validated and normalised by the notebook's contract
    assert job.created_at.tzinfo is not None
    assert get_job(job.id, settings=pg_settings) == job
    assert _count(pg_settings, Job) == 1 and _count(pg_settings, Outbox) == 1


@pytest.mark.parametrize(
    "path",
    ["../outside.ipynb", "/etc/passwd", "notebooks/../../x.ipynb", "dvc.yaml", "notebooks/missing.ipynb"],
)
def test_paths_outside_the_roots_or_missing_are_refused_and_nothing_is_queued(pg_settings, path):
    from jobrunner.jobs import submit
    from jobrunner.store.models import Job

    (pg_settings.project_dir / "outside.ipynb").write_text("{}")
    with pytest.raises(NotebookNotFound):
        submit(path, settings=pg_settings)
    assert _count(pg_settings, Job) == 0


def test_symlink_escaping_the_roots_is_refused(pg_settings, tmp_path_factory):
    from jobrunner.jobs import submit

    elsewhere = tmp_path_factory.mktemp("elsewhere") / "evil.ipynb"
    (pg_settings.project_dir / "notebooks" / "ok.ipynb").replace(elsewhere)
    (pg_settings.project_dir / "notebooks" / "ok.ipynb").symlink_to(elsewhere)
    with pytest.raises(NotebookNotFound, match="outside the notebook roots"):
        submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)


def test_bad_parameters_are_refused_before_anything_is_queued(pg_settings):
    from jobrunner.jobs import submit
    from jobrunner.store.models import Job

    with pytest.raises(ParameterError) as err:
        submit("notebooks/ok.ipynb", {"x": "three", "typo": 1}, settings=pg_settings)
    assert {p.name for p in err.value.problems} == {"x", "typo"}
    assert _count(pg_settings, Job) == 0


def test_parameter_values_are_data_never_code(pg_settings):
    from jobrunner.jobs import submit

    job = submit("notebooks/ok.ipynb", {"label": "__import__('os').system('false')"}, settings=pg_settings)
    assert job.parameters["label"] == "__import__('os').system('false')"


def test_idempotency_key_returns_the_existing_job(pg_settings):
    from jobrunner.jobs import submit
    from jobrunner.store.models import Job, Outbox

    first = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="k-1", settings=pg_settings)
    again = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="k-1", settings=pg_settings)
    other = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="k-2", settings=pg_settings)
    assert again.id == first.id and other.id != first.id
    assert _count(pg_settings, Job) == 2 and _count(pg_settings, Outbox) == 2


def test_idempotency_key_reused_with_other_parameters_is_a_conflict(pg_settings):
    from jobrunner.errors import IdempotencyConflict
    from jobrunner.jobs import submit
    from jobrunner.store.models import Job

    first = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="k-1", settings=pg_settings)
    with pytest.raises(IdempotencyConflict, match=first.id):
        submit("notebooks/ok.ipynb", {"x": 2}, idempotency_key="k-1", settings=pg_settings)
    with pytest.raises(IdempotencyConflict):
        submit("notebooks/raises.ipynb", idempotency_key="k-1", settings=pg_settings)
    assert _count(pg_settings, Job) == 1


def test_list_filters_and_pages_newest_first(pg_settings):
    from jobrunner.jobs import cancel_job, list_jobs, submit

    ids = [submit("notebooks/ok.ipynb", {"x": i}, settings=pg_settings).id for i in range(5)]
    raises = submit("notebooks/raises.ipynb", settings=pg_settings).id
    cancel_job(ids[0], settings=pg_settings)
    page = list_jobs(limit=2, offset=0, settings=pg_settings)
    assert page.total == 6 and [j.id for j in page.items] == [raises, ids[4]]
    assert [j.id for j in list_jobs(limit=2, offset=2, settings=pg_settings).items] == [ids[3], ids[2]]
    assert [j.id for j in list_jobs(state="cancelled", settings=pg_settings).items] == [ids[0]]
    assert list_jobs(notebook="notebooks/raises.ipynb", settings=pg_settings).total == 1
    with pytest.raises(ValueError):
        list_jobs(state="DONE", settings=pg_settings)


def test_cancel_queued_then_cancel_again_is_a_conflict(pg_settings):
    from jobrunner.jobs import cancel_job, submit

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    cancelled = cancel_job(job.id, settings=pg_settings)
    assert cancelled.state.value == "CANCELLED" and cancelled.finished_at is not None
    with pytest.raises(InvalidTransition, match="CANCELLED"):
        cancel_job(job.id, settings=pg_settings)


def test_unknown_job_ids_raise_job_not_found(pg_settings):
    from jobrunner.jobs import cancel_job, get_job

    with pytest.raises(JobNotFound, match="no job"):
        get_job("00000000-0000-0000-0000-000000000000", settings=pg_settings)
    with pytest.raises(JobNotFound):
        cancel_job("nope", settings=pg_settings)


def test_embedded_sqlite_store_needs_no_migrate_step(project):
    from jobrunner.config import get_settings
    from jobrunner.jobs import get_job, submit

    settings = get_settings()
    assert settings.database_url.startswith("sqlite:///")
    job = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="e", settings=settings)
    assert get_job(job.id, settings=settings).state.value == "QUEUED"
    assert submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="e", settings=settings).id == job.id


def test_concurrent_submissions_with_one_idempotency_key_create_one_job(pg_settings):
    import threading

    from jobrunner.jobs import submit
    from jobrunner.store.models import Job

    barrier = threading.Barrier(6)
    ids: list[str] = []

    def go() -> None:
        barrier.wait()
        ids.append(submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="same", settings=pg_settings).id)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6 and len(set(ids)) == 1
    assert _count(pg_settings, Job) == 1
