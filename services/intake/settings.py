from __future__ import annotations

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"
    http_port: int = 8001
    # The courier's shipping fee, collected at the door; documents themselves are free by law.
    cod_fee_rupiah: int = 20_000
