"""The dramatiq broker: Redis when REDIS_URL is set, else an in-memory stub broker.

CHRONICLE_BROKER_NAMESPACE separates deployments (and test runs) sharing one Redis.
"""

from __future__ import annotations


import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from infrastructure.config import Settings, get_settings

def broker_namespace() -> str:
    """The Redis key prefix of this deployment's queues."""
    return get_settings().chronicle_broker_namespace


def make_broker(settings: Settings | None = None, *, namespace: str | None = None) -> dramatiq.Broker:
    """A Redis broker with short timeouts, so a Redis outage fails a send fast."""
    settings = settings or get_settings()
    if not settings.redis_url:
        return StubBroker()
    return RedisBroker(
        url=settings.redis_url, namespace=namespace or broker_namespace(),
        socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=30,
    )


def setup_broker(settings: Settings | None = None, *, namespace: str | None = None) -> dramatiq.Broker:
    """Make the broker and install it as dramatiq's global broker (before actors are declared)."""
    broker = make_broker(settings, namespace=namespace)
    dramatiq.set_broker(broker)
    return broker


_process_broker: dramatiq.Broker | None = None


def process_broker() -> dramatiq.Broker:
    """This process's broker, set up on first use: the actors declare themselves on it, and
    senders that are not actors (the API's wake-ups) send through it."""
    global _process_broker
    if _process_broker is None:
        _process_broker = setup_broker()
    return _process_broker
