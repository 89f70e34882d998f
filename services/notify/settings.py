from __future__ import annotations

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = 8004

    whatsapp_base_url: str = "http://127.0.0.1:8090/whatsapp"
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_access_token: str = "wa-dev-access-token"
    whatsapp_api_version: str = "v21.0"
    whatsapp_app_secret: str = "wa-dev-app-secret"
    whatsapp_timeout_s: float = 10.0

    send_concurrency: int = 16
    send_retry_start_s: float = 1.0
    send_retry_cap_s: float = 300.0
    # After this many failed attempts a message is given up (status 'failed', visible to ops).
    send_max_attempts: int = 10
    send_claim_s: float = 30.0
