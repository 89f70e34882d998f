"""structlog configuration: JSON lines, context bound per message and per HTTP request.

Every value is passed through ``mask_value`` last, so a NIK or phone number that slips into a log
call is masked before it is written.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from shared.privacy import mask_value


def _mask_personal_data(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: mask_value(v) for k, v in event_dict.items()}


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    lvl = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_personal_data,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
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
                structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
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
