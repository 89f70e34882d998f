"""The AsyncAPI document of every Kafka topic, built from the contract models with FastStream.

``python -m shared.contracts.generate`` writes it to ``docs/asyncapi.yaml``; the FastStream CLI
(it needs ``faststream[cli]``) gives the same document with
``faststream docs gen shared.contracts.asyncapi:app --yaml`` and serves it with
``faststream docs serve shared.contracts.asyncapi:app``. Building it never connects to
Kafka: publishers are only declared, the broker is never started.

FastStream 0.7 documents a publisher's topic and payload only, so ``KetanmuAsyncAPI`` adds what
DESIGN.md section 2 also promises to every message: the key, the headers and the producing service.
"""

from __future__ import annotations

from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, Specification

from shared.contracts import topics
from shared.contracts.events import CURRENT_VERSION, EVENT_MODELS

# DESIGN.md section 1: the single service that may emit each event type.
PRODUCERS: dict[str, str] = {
    topics.REQUEST_REGISTERED: "intake",
    topics.DOCUMENT_PRINTED: "printing",
    topics.REQUEST_REJECTED: "printing",
    topics.HANDED_TO_COURIER: "courier",
    topics.COD_PAID: "courier",
    topics.DELIVERED: "courier",
    topics.DELIVERY_FAILED: "courier",
    topics.RETURNED_TO_OFFICE: "courier",
}

REQUEST_ID_KEY: dict[str, Any] = {
    "type": "string",
    "format": "uuid",
    "description": "The request id (the envelope's request_id), UTF-8: every event of one "
    "request stays in order on one partition",
}


def event_headers_schema(topic: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Repeat routing fields of the envelope so tools need not parse the value",
        "required": ["event_type", "event_id", "correlation_id"],
        "properties": {
            "event_type": {"type": "string", "const": topic, "description": "The topic's name"},
            "event_id": {"type": "string", "format": "uuid", "description": "envelope event_id"},
            "correlation_id": {"type": "string", "description": "envelope correlation_id"},
            "content-type": {"type": "string", "const": "application/json"},
        },
    }


DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "The original message's headers, plus why and where it failed",
    "required": [
        "dlq-reason",
        "dlq-original-topic",
        "dlq-original-partition",
        "dlq-original-offset",
        "dlq-consumer",
    ],
    "properties": {
        "dlq-reason": {"type": "string", "maxLength": 1000, "description": "The error"},
        "dlq-original-topic": {"type": "string"},
        "dlq-original-partition": {"type": "string", "pattern": r"^\d+$"},
        "dlq-original-offset": {"type": "string", "pattern": r"^\d+$"},
        "dlq-consumer": {"type": "string", "description": "Consumer group that gave up on it"},
    },
    "additionalProperties": {"type": "string"},
}


def _event_description(topic: str) -> str:
    return (
        f"`{topic}` events, produced only by the **{PRODUCERS[topic]}** service"
        f" (event_version {CURRENT_VERSION[topic]}). Value: the JSON envelope; key: the request id"
        " (UTF-8); headers: event_type, event_id, correlation_id."
    )


def _dead_letter_description(service: str) -> str:
    return (
        f"Messages the **{service}** service can never process (they do not parse or break an"
        " invariant). Value: the original bytes, unchanged; key: the original key; headers: the"
        " original headers plus dlq-reason, dlq-original-topic, dlq-original-partition,"
        " dlq-original-offset and dlq-consumer."
    )


# The messages FastStream does not describe fully: name -> (producer, key, headers, content type).
_MESSAGE_EXTRAS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    **{
        t: (PRODUCERS[t], REQUEST_ID_KEY, event_headers_schema(t), "application/json")
        for t in topics.EVENT_TOPICS
    },
    **{
        topics.dead_letter_topic(s): (
            s,
            {"type": "string", "description": "The original message's key, unchanged"},
            DEAD_LETTER_HEADERS,
            "application/octet-stream",
        )
        for s in topics.SERVICES
    },
}


_CHANNEL_ORDER: list[str] = list(_MESSAGE_EXTRAS)  # the lifecycle order, then dead letters


def _in_order(items: dict[str, Any], name_of: Any = lambda name: name) -> dict[str, Any]:
    return dict(sorted(items.items(), key=lambda item: _CHANNEL_ORDER.index(name_of(item[0]))))


class KetanmuAsyncAPI(AsyncAPI):
    """FastStream's AsyncAPI 3.0 factory, plus message key, headers and producer per channel.

    It also fixes the order of channels, operations and schemas: FastStream keeps publishers in a
    ``WeakSet``, whose order changes from run to run, and the committed document must not.
    """

    def to_specification(self) -> Specification:
        spec: Any = super().to_specification()
        spec.channels = _in_order(spec.channels)
        spec.operations = _in_order(spec.operations)
        components = spec.components
        components.messages = _in_order(components.messages, lambda n: n.removesuffix(":Message"))
        components.schemas = dict(sorted(components.schemas.items()))
        for name, operation in spec.operations.items():
            producer = _MESSAGE_EXTRAS[name][0]
            operation.summary = f"{producer} publishes to {name}"
            operation.tags = [{"name": producer, "description": "producing service"}]
        for name, message in components.messages.items():
            channel = name.removesuffix(":Message")
            producer, key, headers, content_type = _MESSAGE_EXTRAS[channel]
            message.name = (
                f"{channel}.v{CURRENT_VERSION[channel]}" if channel in EVENT_MODELS else channel
            )
            message.contentType = content_type
            message.headers = headers
            message.bindings = {"kafka": {"key": key, "bindingVersion": "0.5.0"}}
        return spec  # type: ignore[no-any-return]


broker = KafkaBroker(
    "127.0.0.1:9092",
    description="Local broker of deploy/local; topics are created by shared.kafka.admin",
)

for _topic in topics.EVENT_TOPICS:
    broker.publisher(
        _topic,
        schema=EVENT_MODELS[_topic],
        title=_topic,
        description=_event_description(_topic),
    )
for _service in topics.SERVICES:
    broker.publisher(
        topics.dead_letter_topic(_service),
        schema=bytes,
        title=topics.dead_letter_topic(_service),
        description=_dead_letter_description(_service),
    )

app = FastStream(
    broker,
    specification=KetanmuAsyncAPI(
        title="Ketanmu events",
        version="1",
        description="Every Kafka topic between the Ketanmu services (DESIGN.md section 2). One"
        " topic per event type; each message value is the envelope with the event's payload in"
        " `data`. A breaking change raises that event's event_version.",
    ),
)


def asyncapi_yaml() -> str:
    """The document as YAML, exactly as ``faststream docs gen ... --yaml`` would write it."""
    return app.schema.to_specification().to_yaml()
