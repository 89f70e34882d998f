from __future__ import annotations

from pydantic import model_validator

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = 8004

    whatsapp_base_url: str = "http://127.0.0.1:8090/whatsapp"
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_access_token: str = "wa-dev-access-token"
    whatsapp_api_version: str = "v21.0"
    # Webhook (status callbacks, inbound message times): Meta signs with the app secret and
    # verifies the subscription with the verify token.
    whatsapp_app_secret: str = "wa-dev-app-secret"
    whatsapp_verify_token: str = "wa-dev-verify-token"
    whatsapp_timeout_s: float = 10.0
    # Free text only if the 24-hour window is still open this long after the send.
    whatsapp_window_margin_s: float = 600.0

    send_concurrency: int = 16
    send_retry_start_s: float = 1.0
    send_retry_cap_s: float = 300.0
    # Attempts before a send is given up and dead-lettered (status 'failed', dlq.notify):
    # with the defaults, about an hour of a failing Cloud API.
    send_max_attempts: int = 20
    # A claimed message is sent again only after its claim ran out (the sender died).
    send_claim_s: float = 30.0
    # After a send with no answer (timeout), wait this long for a status callback saying it was
    # accepted before sending it again: the one window where a message could go out twice.
    send_confirm_wait_s: float = 120.0

    @model_validator(mode="after")
    def _claim_outlasts_a_send(self) -> NotifySettings:
        # A claim that ran out while its send is still on the wire would let it be sent again.
        if self.send_claim_s <= self.whatsapp_timeout_s:
            raise ValueError("SEND_CLAIM_S must be longer than WHATSAPP_TIMEOUT_S")
        return self
