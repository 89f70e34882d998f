from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class PrintingSettings(ServiceSettings):
    service_name: str = "printing"
    http_port: int = 8002

    # A claim keeps other operators out for this long; then the job is free again.
    claim_ttl_s: float = 30 * 60

    # Bearer token -> operator name, as JSON (PRINTING_OPERATOR_TOKENS='{"t0k3n": "budi"}').
    # Empty (the local default): the operator named in the body is trusted, as on the office LAN.
    # Set: every operator call needs its token and acts as the operator the token names.
    printing_operator_tokens: dict[str, str] = Field(default_factory=dict)
