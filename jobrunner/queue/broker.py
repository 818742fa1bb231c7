"""The broker of a configuration, picked by JOBRUNNER_BROKER_URL's scheme.

- `amqp://` / `amqps://`: RabbitMQ through pika (queue.amqp.AmqpBroker).
- unset: embedded (queue.embedded.EmbeddedBroker): the job store's `job_outbox` table is the queue.

A further transport is a class with the `Broker` protocol (queue.base), constructed from the URL and the
queue name, registered in BROKERS under its scheme.
"""

from __future__ import annotations

from collections.abc import Callable

from jobrunner.config import Settings
from jobrunner.errors import ConfigurationError
from jobrunner.queue.amqp import AmqpBroker
from jobrunner.queue.base import Broker
from jobrunner.queue.embedded import EmbeddedBroker

# scheme of JOBRUNNER_BROKER_URL -> the broker class, called with (url, queue name)
BROKERS: dict[str, Callable[[str, str], Broker]] = {"amqp": AmqpBroker, "amqps": AmqpBroker}


def broker_for(settings: Settings) -> Broker:
    """The broker of these settings: the embedded one when JOBRUNNER_BROKER_URL is unset."""
    if settings.embedded or settings.broker_url is None:
        return EmbeddedBroker(settings)
    scheme = settings.broker_url.split("://", 1)[0]
    try:
        broker_class = BROKERS[scheme]
    except KeyError:
        raise ConfigurationError(
            f"unsupported JOBRUNNER_BROKER_URL scheme {scheme!r}: "
            "use amqp://... or unset it for embedded mode"
        ) from None
    return broker_class(settings.broker_url, settings.queue_name)
