"""The WhatsApp Cloud API settings intake and notify both read: same variables, same defaults
(the sandbox's in a local run)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class WhatsAppSettings(BaseSettings):
    # As shared/settings.py's ServiceSettings (a variable set to "" counts as unset): intake and
    # notify inherit from both, and a base's settings config would otherwise undo that one's.
    model_config = SettingsConfigDict(env_ignore_empty=True)

    whatsapp_base_url: str = "http://127.0.0.1:8090/whatsapp"
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_access_token: str = "wa-dev-access-token"
    whatsapp_api_version: str = "v21.0"
    # Webhooks: Meta signs each POST with the app secret (X-Hub-Signature-256) and verifies the
    # subscription with the verify token (hub.challenge).
    whatsapp_app_secret: str = "wa-dev-app-secret"
    whatsapp_verify_token: str = "wa-dev-verify-token"
    whatsapp_timeout_s: float = 10.0
