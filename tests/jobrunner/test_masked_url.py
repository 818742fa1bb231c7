"""Connection errors name the service's URL without its password (one masking helper for both)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg2://jobs:s3cret@db:5432/jobs", "postgresql+psycopg2://jobs:***@db:5432/jobs"),
        ("amqp://guest:s3cret@rabbit:5672/%2F", "amqp://guest:***@rabbit:5672//"),
        ("sqlite:////tmp/jobs.db", "sqlite:////tmp/jobs.db"),
        ("not-a-url:s3cret@host", "***@host"),
    ],
)
def test_masked_url(url: str, shown: str) -> None:
    from jobrunner.store.db import masked_url

    assert masked_url(url) == shown


def test_unreachable_store_and_broker_do_not_print_the_password() -> None:
    from jobrunner.errors import BrokerUnavailable, StoreUnavailable
    from jobrunner.queue.amqp import AmqpBroker

    port = free_port()  # nothing listens there
    with pytest.raises(BrokerUnavailable) as broker_error:
        AmqpBroker(f"amqp://guest:s3cret@127.0.0.1:{port}/%2F", "q").connect(attempts=1)
    assert "s3cret" not in str(broker_error.value) and f"guest:***@127.0.0.1:{port}" in str(
        broker_error.value
    )

    from jobrunner.config import Settings
    from jobrunner.store.db import session_scope

    settings = Settings(
        _env_file=None, database_url=f"postgresql+psycopg2://jobs:s3cret@127.0.0.1:{port}/jobs"
    )
    with pytest.raises(StoreUnavailable) as store_error, session_scope(settings):
        pass
    assert "s3cret" not in str(store_error.value) and f"jobs:***@127.0.0.1:{port}" in str(store_error.value)


def test_a_driverless_postgresql_url_works(postgres_admin_url: str) -> None:
    """postgresql://... (as psql and most tools write it) uses the installed psycopg2, not psycopg 3."""
    from jobrunner.store.db import get_engine

    plain = "postgresql://" + postgres_admin_url.split("://", 1)[1]
    with get_engine(plain).connect() as conn:
        assert conn.exec_driver_sql("select 1").scalar() == 1
        assert conn.dialect.driver == "psycopg2"
    from serve.store.db import make_engine

    with make_engine(plain).connect() as conn:  # the API's prediction store takes the same URL
        assert conn.dialect.driver == "psycopg2"
