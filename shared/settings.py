"""Settings every service reads from the environment, with working local defaults.

Each service subclasses ``ServiceSettings`` in its own ``settings.py`` with its own defaults
(name, port). Environment variable names are the field names in upper case.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# How long a fetch may wait for records: well below aiokafka's request timeout (40 s).
FetchWaitMs = Annotated[int, Field(ge=0, le=5000)]


class ServiceSettings(BaseSettings):
    # env_ignore_empty: a variable set to "" counts as unset (the default applies). docker-compose
    # passes `${INTAKE_OPERATORS:-}` as "" when ops set nothing, and "" is not JSON.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", frozen=True, env_ignore_empty=True
    )

    service_name: str = "ketanmu"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    database_url: str = "postgresql://ketanmu:ketanmu@127.0.0.1:5432/ketanmu"
    db_pool_min: int = 2
    db_pool_max: int = 10

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Consumer group = group prefix + service name; tests give each run its own prefix.
    kafka_group_prefix: str = ""
    # Physical topic names are this prefix + the contract's names. Empty in production: the
    # topics are named exactly as DESIGN.md says. Tests and benchmarks give each run its own
    # prefix so that several systems can share one broker without consuming each other's events.
    kafka_topic_prefix: str = ""
    kafka_batch_max_records: int = 500
    kafka_batch_timeout_ms: int = 50
    # The broker answers a fetch once it has this many bytes or waited this long. aiokafka's
    # defaults (1 byte, 500 ms) answer as soon as one record is there: under steady load every
    # consumer then fetches, applies a batch of one or two events in its own transaction and
    # commits its offsets, once per record. Waiting lets a batch gather: at 20 lifecycles/s a
    # 40 ms wait took a sixth of the whole system's CPU away (Kafka, PostgreSQL and every consumer;
    # bench/README.md, "Third round"); 100 ms did better at 40/s, for at most 100 ms more per
    # consuming hop. Services off the delivery path wait longer (intake, notify: their settings).
    kafka_fetch_min_bytes: int = Field(65536, ge=1)
    kafka_fetch_max_wait_ms: FetchWaitMs = 100

    outbox_batch_size: int = 500
    outbox_poll_interval_s: float = Field(1.0, gt=0)
    # Once woken (by a commit, or its poll), the relay waits this long before reading the
    # outbox, so that the commits of those milliseconds go out in one batch: one read, one
    # produce request, one delete (0: publish each at once). 25 ms: 3-6% less CPU per lifecycle
    # at 40-50/s.
    outbox_linger_ms: int = Field(25, ge=0, le=1000)

    log_level: str = "INFO"
    log_json: bool = True

    # Retention (UU PDP: personal data is deleted when its purpose ends; shared/retention.py):
    # what a finished request left in this service is erased this long after it finished.
    personal_data_retention_days: float = Field(90.0, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)
    # The inbox (the duplicate detector) keeps an event id this long: past the topics' retention
    # (Kafka's default, which ours keep: 7 days) no copy of the event can be delivered again.
    # Keep it above the topics' retention.ms if that is ever raised.
    inbox_retention_days: float = Field(30.0, ge=1)

    @property
    def db_schema(self) -> str:
        return self.service_name

    @property
    def consumer_group(self) -> str:
        return f"{self.kafka_group_prefix}{self.service_name}"
