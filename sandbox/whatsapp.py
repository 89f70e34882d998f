"""WhatsApp Business Cloud API, as the sandbox plays it: ``POST /{version}/{phone-number-id}/messages``.

It checks the token and the body the way Meta does (same error codes and JSON shape) and records
every accepted message for the tests and the demo (``GET /sandbox/whatsapp/messages``). Like Meta, it
accepts a free-form text outside the 24-hour window at the API and would only fail it later in a
status callback, so the sandbox does not refuse it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from sandbox.faults import gate
from sandbox.responses import JSONResponse
from sandbox.state import rfc3339, utc_now
from sandbox.world import World

router = APIRouter(prefix="/whatsapp", tags=["WhatsApp Cloud API"])

_VERSION = re.compile(r"^v\d+\.\d+$")
# Meta refuses template parameters with new lines, tabs or more than 4 consecutive spaces.
_BAD_PARAM_TEXT = re.compile(r"[\n\t]| {5,}")
_MAX_TEXT = 4096


class MetaError(Exception):
    def __init__(self, code: int, title: str, details: str, status: int = 400) -> None:
        super().__init__(title)
        self.code, self.title, self.details, self.status = code, title, details, status


def _meta_error(world: World, err: MetaError) -> JSONResponse:
    error: dict[str, Any] = {
        "message": f"(#{err.code}) {err.title}",
        "type": "OAuthException",
        "code": err.code,
        "error_data": {"messaging_product": "whatsapp", "details": err.details},
        "fbtrace_id": "A" + world.state.token(8),
    }
    return JSONResponse({"error": error}, status_code=err.status)


def _missing(details: str) -> MetaError:
    return MetaError(131008, "Required parameter is missing", details)


def _invalid(details: str) -> MetaError:
    return MetaError(131009, "Parameter value is not valid", details)


def _check_template(template: Any) -> None:
    if not isinstance(template, dict):
        raise _missing("template is required for type template")
    if not isinstance(template.get("name"), str) or not template["name"]:
        raise _missing("template.name")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        raise _missing("template.language.code")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise _invalid("template.components must be a list")
    for component in components:
        if not isinstance(component, dict) or component.get("type") not in (
            "header",
            "body",
            "footer",
            "button",
        ):
            raise _invalid("template.components[].type")
        for param in component.get("parameters", []):
            if not isinstance(param, dict) or not isinstance(param.get("type"), str):
                raise _invalid("template.components[].parameters[].type")
            if param["type"] == "text":
                text = param.get("text")
                if not isinstance(text, str) or not text:
                    raise _missing("Parameter text is missing")
                if _BAD_PARAM_TEXT.search(text):
                    raise MetaError(
                        132018,
                        "There was an issue with the parameters in your template.",
                        "Param text cannot have new-line/tab characters or more than 4 "
                        "consecutive spaces",
                    )


def _check_message(body: Any) -> None:
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        raise MetaError(100, "Invalid parameter", "The parameter messaging_product is required.")
    to = body.get("to")
    if not isinstance(to, str) or not to.removeprefix("+").isdigit():
        raise MetaError(100, "Invalid parameter", "Param to must be a phone number (digits)")
    if body.get("recipient_type", "individual") != "individual":
        raise _invalid("recipient_type must be individual")
    kind = body.get("type", "text")
    if kind == "text":
        text = body.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
            raise _missing("text.body")
        if len(text["body"]) > _MAX_TEXT:
            raise _invalid(f"text.body is longer than {_MAX_TEXT} characters")
    elif kind == "template":
        _check_template(body.get("template"))
    else:
        raise _invalid("the sandbox plays text and template messages only")


def _params(template: dict[str, Any]) -> list[str]:
    return [
        p.get("text", "")
        for c in template.get("components", [])
        if c.get("type") == "body"
        for p in c.get("parameters", [])
    ]


def _record(world: World, phone_number_id: str, body: dict[str, Any]) -> dict[str, Any]:
    wa_id = body["to"].removeprefix("+")
    received = utc_now()
    template = body.get("template") if body.get("type") == "template" else None
    message = {
        "id": "wamid." + world.state.token(12),
        "to": body["to"],
        "wa_id": wa_id,
        "phone_number_id": phone_number_id,
        "type": body.get("type", "text"),
        "template": template["name"] if template else None,
        "language": template["language"]["code"] if template else None,
        "params": _params(template) if template else [],
        "text": body["text"]["body"] if not template else None,
        "received_at": rfc3339(received),
        "received_at_epoch": received.timestamp(),
        "body": body,
    }
    world.state.add_message(message)
    return message


@router.post("/{version}/{phone_number_id}/messages")
async def send_message(version: str, phone_number_id: str, request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "whatsapp")) is not None:
        return outage
    settings = world.settings
    try:
        if request.headers.get("authorization") != f"Bearer {settings.whatsapp_access_token}":
            raise MetaError(
                190, "Invalid OAuth access token - Cannot parse access token", "", status=401
            )
        if not _VERSION.match(version):
            raise MetaError(100, "Invalid parameter", f"Unknown API version {version}")
        if phone_number_id != settings.whatsapp_phone_number_id:
            raise MetaError(
                100,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation.",
                "",
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise MetaError(100, "Invalid parameter", "The request body is not JSON.") from None
        _check_message(body)
    except MetaError as err:
        return _meta_error(world, err)
    message = _record(world, phone_number_id, body)
    return JSONResponse(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": message["wa_id"]}],
            "messages": [{"id": message["id"]}],
        }
    )


def messages_since(world: World, to: str | None, since: float | None) -> list[dict[str, Any]]:
    wanted = to.strip().removeprefix("+") if to else None
    return world.state.find_messages(wanted, since)


def parse_since(value: str | None) -> float | None:
    """``since`` as unix seconds or an RFC 3339 time."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
