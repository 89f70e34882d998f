"""Intake's settings: environment variables (field names in upper case) with local defaults."""

from __future__ import annotations

from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from shared.contracts.events import DocumentType
from shared.settings import FetchWaitMs, ServiceSettings
from shared.whatsapp.settings import WhatsAppSettings

from .overload import Thresholds

Role = Literal["operator", "supervisor"]

# Local runs and tests only: `INTAKE_OPERATORS` replaces these in any real deployment.
DEV_OPERATOR_TOKEN = "ketanmu-dev-operator-token"
DEV_SUPERVISOR_TOKEN = "ketanmu-dev-supervisor-token"


class OperatorSeed(BaseModel):
    """One operator from ``INTAKE_OPERATORS``; give ``token_sha256`` rather than ``token`` in
    production so the environment never holds a usable token."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = ""
    role: Role = "operator"
    token: SecretStr | None = None
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_token(self) -> OperatorSeed:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token / token_sha256")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("an operator token needs at least 16 characters")
        return self


def _dev_operators() -> list[OperatorSeed]:
    return [
        OperatorSeed(
            id="dev-operator", name="Operator (dev)", role="operator",
            token=SecretStr(DEV_OPERATOR_TOKEN),
        ),
        OperatorSeed(
            id="dev-supervisor", name="Supervisor (dev)", role="supervisor",
            token=SecretStr(DEV_SUPERVISOR_TOKEN),
        ),
    ]  # fmt: skip


class IntakeSettings(ServiceSettings, WhatsAppSettings):
    service_name: str = "intake"
    http_port: int = 8001
    # The courier's shipping fee, collected at the door; documents themselves are free by law.
    cod_fee_rupiah: int = Field(20_000, gt=0)
    # Where applicants open the tracking page (put in WhatsApp replies).
    public_base_url: str = "http://127.0.0.1:8001"
    max_body_bytes: int = Field(65_536, ge=1024)
    # intake's consumer only tracks statuses (the tracking page, replies): it may batch longer than
    # the delivery path's consumers (shared/settings.py)
    kafka_fetch_max_wait_ms: FetchWaitMs = 250

    # ---- operators (`INTAKE_OPERATORS`, JSON list of {id, name, role, token | token_sha256}) --
    intake_operators: list[OperatorSeed] = Field(default_factory=_dev_operators)

    # ---- capacity ------------------------------------------------------------------------
    office_timezone: str = "Asia/Jakarta"
    # requests per document type and day (`DAILY_QUOTA='{"ktp_el": 100}'`); others get the default
    daily_quota_default: int = Field(250, ge=0)
    daily_quota: dict[DocumentType, int] = Field(default_factory=dict)
    # days that differ: closure days, Lebaran (`QUOTA_OVERRIDES='{"2025-03-31": {"*": 0,
    # "akta_kelahiran": 40}}'`; "*" is every type not named)
    quota_overrides: dict[date, dict[str, int]] = Field(default_factory=dict)
    quota_horizon_days: int = Field(60, ge=1, le=366)

    # ---- public tracking: fixed windows counted in PostgreSQL ------------------------------
    tracking_window_s: int = Field(900, ge=1)
    tracking_max_failures_per_client: int = Field(10, ge=1)
    tracking_max_failures_per_code: int = Field(5, ge=1)
    tracking_max_lookups_per_client: int = Field(120, ge=1)
    # Web registrations per client and hour (0: no limit). Without one, a single client can fill
    # the day's quota with invented NIKs; set it where the web form is public.
    registration_max_per_client_hour: int = Field(0, ge=0)
    # Only behind a proxy that sets X-Forwarded-For itself; otherwise a client could pick its IP.
    trust_forwarded_for: bool = False

    # ---- load shedding (overload.py, shedding.py): 429 + Retry-After while the pipeline is
    # behind. Consumer lag of the slowest downstream group, in events (0: not a signal, Kafka is
    # not asked), and intake's unpublished outbox rows (0: not a signal); both 0: never shed.
    intake_shed_lag_limit: int = Field(2000, ge=0)
    intake_shed_backlog_limit: int = Field(1000, ge=0)
    # Shedding stops only when every signal is at or below this share of its limit (hysteresis).
    intake_shed_resume_ratio: float = Field(0.5, ge=0, lt=1)
    # Retry-After: the floor at the limit, growing with how far over it, up to the cap.
    intake_shed_retry_after_min_s: int = Field(5, ge=1)
    intake_shed_retry_after_max_s: int = Field(60, ge=1)
    intake_shed_sample_interval_s: float = Field(1.5, gt=0)
    # Services whose consumer groups (KAFKA_GROUP_PREFIX + name) are watched: JSON list.
    intake_shed_groups: list[str] = Field(default_factory=lambda: ["printing", "courier", "notify"])

    # ---- WhatsApp: the whatsapp_* fields come from WhatsAppSettings (shared with notify) -----
    reply_retry_start_s: float = 1.0
    reply_retry_cap_s: float = 60.0
    reply_max_attempts: int = 8
    reply_claim_s: float = 30.0

    # ---- retention (UU PDP: data is deleted when its purpose ends) ---------------------------
    # personal_data_retention_days and retention_interval_s: every service's (shared/settings.py)
    conversation_ttl_hours: float = Field(24.0, gt=0)
    # Meta redelivers a webhook for up to 7 days: remember message ids that long
    inbound_dedup_days: float = Field(7.0, gt=0)

    @field_validator("office_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises on an unknown zone
        return value

    @field_validator("daily_quota")
    @classmethod
    def _quota(cls, value: dict[DocumentType, int]) -> dict[DocumentType, int]:
        if any(v < 0 for v in value.values()):
            raise ValueError("a daily quota cannot be negative")
        return value

    @field_validator("quota_overrides")
    @classmethod
    def _overrides(cls, value: dict[date, dict[str, int]]) -> dict[date, dict[str, int]]:
        known = {d.value for d in DocumentType} | {"*"}
        for day in value.values():
            if unknown := set(day) - known:
                raise ValueError(f"unknown document types in QUOTA_OVERRIDES: {sorted(unknown)}")
            if any(v < 0 for v in day.values()):
                raise ValueError("a daily quota cannot be negative")
        return value

    @model_validator(mode="after")
    def _shed_retry_after(self) -> IntakeSettings:
        if self.intake_shed_retry_after_min_s > self.intake_shed_retry_after_max_s:
            raise ValueError(
                "INTAKE_SHED_RETRY_AFTER_MIN_S cannot exceed INTAKE_SHED_RETRY_AFTER_MAX_S"
            )
        return self

    @property
    def shed_thresholds(self) -> Thresholds:
        return Thresholds(
            lag_limit=self.intake_shed_lag_limit,
            backlog_limit=self.intake_shed_backlog_limit,
            resume_ratio=self.intake_shed_resume_ratio,
            retry_after_min_s=self.intake_shed_retry_after_min_s,
            retry_after_max_s=self.intake_shed_retry_after_max_s,
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.office_timezone)
