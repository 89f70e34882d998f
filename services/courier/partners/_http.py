"""How a partner HTTP call fails: transport trouble and 429/5xx are transient, other 4xx are not."""

from __future__ import annotations

from typing import Any

import httpx

from services.courier.partners.base import PartnerError

# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "try again later".
_TRANSIENT_4XX = frozenset({408, 425, 429})


def is_transient_status(status_code: int) -> bool:
    return status_code >= 500 or status_code in _TRANSIENT_4XX


async def send(
    http: httpx.AsyncClient,
    partner: str,
    method: str,
    url: str,
    timeout_s: float,
    **kwargs: Any,
) -> httpx.Response:
    """One request with an explicit timeout; transport errors become PartnerError."""
    try:
        return await http.request(method, url, timeout=httpx.Timeout(timeout_s), **kwargs)
    except httpx.TimeoutException as exc:
        raise PartnerError(
            partner, True, f"timeout ({type(exc).__name__}) after {timeout_s}s"
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        # A misconfigured base URL does not heal by waiting.
        raise PartnerError(partner, False, f"bad partner URL: {exc}") from exc
    except httpx.RequestError as exc:
        raise PartnerError(partner, True, f"connection error ({type(exc).__name__})") from exc


def status_error(partner: str, response: httpx.Response, detail: str = "") -> PartnerError:
    status = response.status_code
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    return PartnerError(partner, is_transient_status(status), reason)


def json_body(response: httpx.Response) -> Any:
    """The parsed JSON body, or None when it is not JSON (an HTML error page from a proxy)."""
    try:
        return response.json()
    except ValueError:
        return None
