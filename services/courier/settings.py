from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class CourierSettings(ServiceSettings):
    service_name: str = "courier"
    http_port: int = 8003

    # Partner endpoints and credentials: the sandbox's in a local run, the real ones in production.
    jnt_base_url: str = "http://127.0.0.1:8090/jnt"
    jnt_api_account: str = "ketanmu-dev"
    jnt_private_key: str = "jnt-dev-private-key"
    jnt_customer_code: str = "KETANMU01"
    pos_base_url: str = "http://127.0.0.1:8090/pos"
    pos_client_id: str = "ketanmu-dev"
    pos_client_secret: str = "pos-dev-client-secret"
    pos_webhook_secret: str = "pos-dev-webhook-secret"
    partner_timeout_s: float = 10.0

    # Booking retries: backoff doubles from start to cap; ops see every failed attempt. Transient
    # failures are retried until the booking has waited this long, then it waits for ops.
    # bookings in flight per partner: at 1 s per partner answer, 32 a second each (the national
    # peak is ~15 requests a second in all); 16 capped the benchmark at ~40/s
    booking_concurrency: int = Field(32, ge=1)
    booking_retry_start_s: float = 1.0
    booking_retry_cap_s: float = 300.0
    booking_claim_s: float = 60.0
    booking_give_up_after_h: float = 48.0
    # A partner is taken for down after this many transient failures in a row; its bookings then
    # wait and one probe goes at intervals doubling from start to cap.
    breaker_threshold: int = 3
    breaker_probe_start_s: float = 1.0
    breaker_probe_cap_s: float = 15.0

    # Delivery is promised 2-4 days after the "ready" message (document-printed).
    promise_min_days: float = 2.0
    promise_max_days: float = 4.0
    # The originals collected at the door are due at the office this many days after delivery.
    originals_return_days: float = 7.0
    # The office's days (reconciliation, reports): WIB +7, WITA +8, WIT +9.
    office_utc_offset_hours: float = 7.0
    # A settlement file larger than this is refused (a day of COD is a few hundred lines).
    settlement_max_bytes: int = 5 * 1024 * 1024

    # The office the courier picks up from.
    office_name: str = "Dispendukcapil Kabupaten Mojokerto"
    office_phone: str = "+62321000000"
    office_street: str = "Jl. R.A. Basuni No. 1"
    office_rt_rw: str = "000/000"
    office_kelurahan: str = "Sooko"
    office_kecamatan: str = "Sooko"
    office_kabupaten_kota: str = "Kabupaten Mojokerto"
    office_provinsi: str = "Jawa Timur"
    office_postal_code: str = "61361"
