"""The event contract: committed schemas vs the models, and the compatibility rules themselves."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from shared.contracts import topics
from shared.contracts.compat import breaking_changes
from shared.contracts.events import CURRENT_VERSION, EVENT_MODELS, PAYLOAD_MODELS
from shared.contracts.generate import (
    ASYNCAPI_PATH,
    ROOT,
    event_schema,
    generated_files,
    schema_path,
    stale_files,
)

BREAKING_HINT = (
    "a breaking change needs a new event_version (see DESIGN.md);"
    " additive changes: run `make schemas`"
)


# --- the committed files against the code -------------------------------------------------------


@pytest.mark.parametrize("topic", topics.EVENT_TOPICS)
def test_models_are_backward_compatible_with_committed_schema(topic: str) -> None:
    path = schema_path(topic, CURRENT_VERSION[topic])
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make schemas`"
    committed = json.loads(path.read_text(encoding="utf-8"))
    problems = breaking_changes(committed, event_schema(topic))
    assert problems == [], (
        f"{topic} v{CURRENT_VERSION[topic]} changed incompatibly:\n  "
        + "\n  ".join(problems)
        + f"\n{BREAKING_HINT}"
    )


def test_committed_contract_files_are_up_to_date() -> None:
    stale = [str(path.relative_to(ROOT)) for path in stale_files(generated_files())]
    assert stale == [], f"out of date: {stale}; run `make schemas` and commit the result"


def test_every_topic_has_a_model_and_a_schema() -> None:
    for topic in topics.EVENT_TOPICS:
        assert topic in EVENT_MODELS and topic in PAYLOAD_MODELS, f"{topic} has no model"
        assert CURRENT_VERSION.get(topic, 0) >= 1, f"{topic} has no current version"
        assert schema_path(topic, CURRENT_VERSION[topic]).exists(), f"{topic}: run `make schemas`"
    assert set(EVENT_MODELS) == set(topics.EVENT_TOPICS), "a model for a topic that does not exist"


def test_asyncapi_documents_every_topic_key_and_headers() -> None:
    doc = yaml.safe_load(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    dead_letters = [topics.dead_letter_topic(s) for s in topics.SERVICES]
    assert list(doc["channels"]) == [*topics.EVENT_TOPICS, *dead_letters]
    for topic in topics.EVENT_TOPICS:
        message = doc["components"]["messages"][f"{topic}:Message"]
        assert message["payload"] == {
            "$ref": f"#/components/schemas/{EVENT_MODELS[topic].__name__}"
        }
        assert message["headers"]["required"] == ["event_type", "event_id", "correlation_id"]
        assert message["bindings"]["kafka"]["key"]["format"] == "uuid"
    for topic in dead_letters:
        headers = doc["components"]["messages"][f"{topic}:Message"]["headers"]["required"]
        assert "dlq-reason" in headers and "dlq-original-offset" in headers


# --- breaking_changes on small hand-written schemas ---------------------------------------------


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    return {"type": "object", "properties": properties, "required": required or [], **extra}


STR = {"type": "string"}
BASE = obj({"waybill": STR, "amount": {"type": "integer", "minimum": 0}}, ["waybill"])


def assert_breaks(old: dict, new: dict, *fragments: str) -> None:
    problems = breaking_changes(old, new)
    assert problems, "expected a breaking change, got none"
    text = "\n".join(problems)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {problems}"


@pytest.mark.parametrize(
    ("new", "fragments"),
    [
        (obj({"waybill": STR}, ["waybill"]), ["/amount: property removed"]),
        (
            obj(
                {"waybill": {"type": "integer"}, "amount": BASE["properties"]["amount"]},
                ["waybill"],
            ),
            ["/waybill: type changed from string to integer"],
        ),
        (
            {
                **BASE,
                "properties": {**BASE["properties"], "paid_at": STR},
                "required": ["waybill", "paid_at"],
            },
            ["/paid_at: new required property"],
        ),
        ({**BASE, "required": ["waybill", "amount"]}, ["/amount: optional property made required"]),
        (
            {
                **BASE,
                "properties": {**BASE["properties"], "amount": {"type": "integer", "minimum": 1}},
            },
            ["/amount: minimum tightened from 0 to 1"],
        ),
        (
            {**BASE, "properties": {**BASE["properties"], "waybill": {**STR, "maxLength": 20}}},
            ["/waybill: maxLength tightened from None to 20"],
        ),
        (
            {**BASE, "properties": {**BASE["properties"], "waybill": {**STR, "pattern": "^P"}}},
            ["/waybill: pattern changed"],
        ),
        (
            {**BASE, "properties": {**BASE["properties"], "waybill": {**STR, "format": "uuid"}}},
            ["/waybill: format changed from None to 'uuid'"],
        ),
        ({**BASE, "additionalProperties": False}, ["/: additionalProperties tightened"]),
    ],
)
def test_each_rule_fires(new: dict, fragments: list[str]) -> None:
    assert_breaks(BASE, new, *fragments)


def test_enum_value_removed_and_const_changed() -> None:
    old = obj({"partner": {"enum": ["pos", "jnt"], "type": "string"}, "kind": {"const": "a"}})
    new = obj({"partner": {"enum": ["pos"], "type": "string"}, "kind": {"const": "b"}})
    assert_breaks(old, new, "/partner: enum value(s) ['jnt'] removed", "/kind: const changed")


def test_anyof_variant_removed_and_optional_made_non_nullable() -> None:
    old = obj({"x": {"anyOf": [STR, {"type": "integer"}, {"type": "null"}]}})
    assert_breaks(old, obj({"x": {"anyOf": [STR, {"type": "null"}]}}), "/x: anyOf variant integer")
    assert_breaks(old, obj({"x": STR}), "/x: type changed from integer to string")


def test_refs_are_resolved_and_nested_changes_found() -> None:
    def envelope(address: dict) -> dict:
        return {
            "$defs": {
                "Address": address,
                "Delivery": obj({"address": {"$ref": "#/$defs/Address"}}),
            },
            **obj({"data": {"$ref": "#/$defs/Delivery"}}, ["data"]),
        }

    old = envelope(obj({"street": STR, "postal_code": {**STR, "pattern": r"^\d{5}$"}}))
    new = envelope(obj({"street": STR}))
    assert_breaks(old, new, "/data/address/postal_code: property removed")
    assert breaking_changes(old, old) == []


def test_array_items_and_additional_properties_are_compared() -> None:
    old = obj(
        {
            "docs": {"type": "array", "items": STR},
            "tags": {"type": "object", "additionalProperties": STR},
        }
    )
    new = obj(
        {
            "docs": {"type": "array", "items": {"type": "integer"}},
            "tags": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    )
    assert_breaks(old, new, "/docs/[]: type changed", "/tags/*: type changed")


@pytest.mark.parametrize(
    "new",
    [
        {**BASE, "properties": {**BASE["properties"], "note": STR}},  # new optional property
        {**BASE, "required": []},  # a required property made optional
        {**BASE, "properties": {**BASE["properties"], "amount": {"type": "number"}}},  # widened
        {**BASE, "properties": {**BASE["properties"], "amount": {"type": "integer"}}},  # loosened
        {
            **BASE,
            "properties": {**BASE["properties"], "waybill": {"anyOf": [STR, {"type": "null"}]}},
        },
        {**BASE, "description": "documentation changes never break anything", "title": "Cod"},
    ],
)
def test_additive_changes_pass(new: dict) -> None:
    assert breaking_changes(BASE, new) == []


def test_new_enum_value_passes() -> None:
    old = obj({"partner": {"enum": ["pos", "jnt"], "type": "string"}})
    new = obj({"partner": {"enum": ["pos", "jnt", "sicepat"], "type": "string"}})
    assert breaking_changes(old, new) == []


def test_removing_a_payload_field_breaks_the_real_contract() -> None:
    """What the first test reports if someone deletes ``Delivered.received_by`` from events.py."""
    current = event_schema(topics.DELIVERED)
    edited = json.loads(json.dumps(current))
    del edited["$defs"]["Delivered"]["properties"]["received_by"]
    edited["$defs"]["Delivered"]["required"].remove("received_by")
    assert breaking_changes(current, edited) == [
        "/data/received_by: property removed (consumers of this version read it)"
    ]
