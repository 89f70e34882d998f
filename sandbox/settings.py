"""The sandbox's settings, and THE dev defaults of the partner credentials.

The services read the same environment variables (``JNT_API_ACCOUNT``, ``POS_CLIENT_ID``...) with the
same defaults, so a local run works with no environment at all. In production the services get real
credentials and real base URLs; the sandbox is never deployed there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# --- dev defaults shared with the services (same env var names) ---------------------------------
DEFAULT_JNT_API_ACCOUNT = "ketanmu-dev"
DEFAULT_JNT_PRIVATE_KEY = "jnt-dev-private-key"
DEFAULT_JNT_CUSTOMER_CODE = "KETANMU01"
DEFAULT_POS_CLIENT_ID = "ketanmu-dev"
DEFAULT_POS_CLIENT_SECRET = "pos-dev-client-secret"
DEFAULT_POS_WEBHOOK_SECRET = "pos-dev-webhook-secret"
DEFAULT_WHATSAPP_ACCESS_TOKEN = "wa-dev-access-token"
DEFAULT_WHATSAPP_PHONE_NUMBER_ID = "100000000000001"
DEFAULT_WHATSAPP_API_VERSION = "v21.0"
DEFAULT_WHATSAPP_APP_SECRET = "wa-dev-app-secret"
DEFAULT_WHATSAPP_VERIFY_TOKEN = "wa-dev-verify-token"

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8090"
# Where the services point their partner base URLs in a local run (JNT_BASE_URL, ...).
DEFAULT_JNT_BASE_URL = f"{DEFAULT_SANDBOX_URL}/jnt"
DEFAULT_POS_BASE_URL = f"{DEFAULT_SANDBOX_URL}/pos"
DEFAULT_WHATSAPP_BASE_URL = f"{DEFAULT_SANDBOX_URL}/whatsapp"
DEFAULT_COURIER_URL = "http://127.0.0.1:8003"

CodOrder = Literal["before", "after", "random"]


class SandboxSettings(BaseSettings):
    # populate_by_name: tests build settings with field names; the environment uses the aliases.
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    host: str = Field("127.0.0.1", validation_alias="SANDBOX_HOST")
    port: int = Field(8090, validation_alias="SANDBOX_PORT")

    autoplay: bool = Field(True, validation_alias="SANDBOX_AUTOPLAY")
    step_delay_ms: int = Field(300, ge=0, validation_alias="SANDBOX_STEP_DELAY_MS")
    cod_order: CodOrder = Field("random", validation_alias="SANDBOX_COD_ORDER")
    courier_url: str = Field(DEFAULT_COURIER_URL, validation_alias="SANDBOX_COURIER_URL")
    pos_token_ttl_s: int = Field(3600, ge=1, validation_alias="SANDBOX_POS_TOKEN_TTL_S")
    # Callback delivery: at most this many POSTs in flight; backoff doubles from start to cap.
    callback_concurrency: int = Field(16, ge=1, validation_alias="SANDBOX_CALLBACK_CONCURRENCY")
    callback_timeout_s: float = Field(5.0, gt=0, validation_alias="SANDBOX_CALLBACK_TIMEOUT_S")
    retry_start_ms: int = Field(200, ge=1, validation_alias="SANDBOX_RETRY_START_MS")
    retry_cap_ms: int = Field(5000, ge=1, validation_alias="SANDBOX_RETRY_CAP_MS")
    seed: int | None = Field(None, validation_alias="SANDBOX_SEED")

    jnt_api_account: str = Field(DEFAULT_JNT_API_ACCOUNT, validation_alias="JNT_API_ACCOUNT")
    jnt_private_key: str = Field(DEFAULT_JNT_PRIVATE_KEY, validation_alias="JNT_PRIVATE_KEY")
    jnt_customer_code: str = Field(DEFAULT_JNT_CUSTOMER_CODE, validation_alias="JNT_CUSTOMER_CODE")
    pos_client_id: str = Field(DEFAULT_POS_CLIENT_ID, validation_alias="POS_CLIENT_ID")
    pos_client_secret: str = Field(DEFAULT_POS_CLIENT_SECRET, validation_alias="POS_CLIENT_SECRET")
    pos_webhook_secret: str = Field(
        DEFAULT_POS_WEBHOOK_SECRET, validation_alias="POS_WEBHOOK_SECRET"
    )
    whatsapp_access_token: str = Field(
        DEFAULT_WHATSAPP_ACCESS_TOKEN, validation_alias="WHATSAPP_ACCESS_TOKEN"
    )
    whatsapp_phone_number_id: str = Field(
        DEFAULT_WHATSAPP_PHONE_NUMBER_ID, validation_alias="WHATSAPP_PHONE_NUMBER_ID"
    )
