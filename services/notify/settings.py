from __future__ import annotations

from pydantic import model_validator

from shared.settings import FetchWaitMs, ServiceSettings
from shared.whatsapp.settings import WhatsAppSettings


class NotifySettings(ServiceSettings, WhatsAppSettings):
    service_name: str = "notify"
    http_port: int = 8004
    # notify consumes every event of a lifecycle and none of them waits on its messages: it may
    # batch longer than the delivery path's consumers (shared/settings.py)
    kafka_fetch_max_wait_ms: FetchWaitMs = 250

    # the whatsapp_* connection fields come from WhatsAppSettings (shared with intake)
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
