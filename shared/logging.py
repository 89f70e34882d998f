"""structlog configuration: JSON lines, context bound per message and per HTTP request.

Every value is passed through ``mask_value`` last, so a NIK or phone number that slips into a log
call is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import structlog
from pydantic import BaseModel

from shared.privacy import mask_text, mask_value

# Masking is most of a log line's cost (two regex passes per string: ~4 us for a UUID), and most
# strings cannot hold what ``mask_text`` masks: every match it masks (a NIK: 16 digits; a phone
# number: at least 10 digits, after an optional "+" or "(+", with spaces, dots, dashes or brackets
# between them) contains 10 characters in a row from [\d\s.()-] (same Unicode classes as the
# patterns). A string without such a run is left as it is without running them.
# tests/unit/test_logging.py pins the patterns this was derived from: change them in
# shared/privacy.py and that test says to check this again.
_MAYBE_PERSONAL = re.compile(r"[\d\s.()-]{10}")


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value) if _MAYBE_PERSONAL.search(value) else value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**9:
        # a NIK or a phone number held as a number: logged as masked text
        text = str(value)
        masked = mask_text(text)
        return value if masked == text else masked
    return mask_value(value)


def _mask_personal_data(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: _masked(v) for k, v in event_dict.items()}


def _fallback(obj: Any) -> Any:
    """A value JSON cannot take, masked like the rest: a pydantic model as its fields (an event's
    ``applicant`` carries a NIK and a phone), anything else as structlog's JSONRenderer would
    write it (``__structlog__()`` or ``repr``)."""
    if isinstance(obj, BaseModel):
        return mask_value(obj.model_dump(mode="json"))
    try:
        text = obj.__structlog__()
    except AttributeError:
        text = repr(obj)
    return mask_value(text)


# One encoder for every line: ``json.dumps(..., default=...)`` builds a new one per call. Same
# output as structlog's default JSONRenderer (json.dumps).
_dumps = json.JSONEncoder(default=_fallback).encode


def _render_json(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    return _dumps(event_dict)


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    lvl = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_personal_data,
        _render_json if json else structlog.dev.ConsoleRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (aiokafka, faststream, uvicorn) go through stdlib logging: warnings and up only,
    # rendered by structlog too so they carry the service name and are masked.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _mask_personal_data,
                _render_json if json else structlog.dev.ConsoleRenderer(),
            ],
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
