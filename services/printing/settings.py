from __future__ import annotations

from shared.settings import ServiceSettings


class PrintingSettings(ServiceSettings):
    service_name: str = "printing"
    http_port: int = 8002
