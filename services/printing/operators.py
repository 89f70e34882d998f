"""Who is acting: the operator named in the body, or the one a bearer token stands for.

Decision (README.md beside this file): with no tokens configured (the local default, an office LAN)
the body's ``operator`` is trusted; with ``PRINTING_OPERATOR_TOKENS`` set, every action needs
``Authorization: Bearer <token>`` and acts as the token's operator, whatever the body says.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from shared.http import Problem


def _token_owner(tokens: dict[str, str], presented: str) -> str | None:
    # Compare against every token in constant time, so timing tells nothing about which is close.
    owner = None
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            owner = name
    return owner


def operator_of(request: Request, named: str | None) -> str:
    tokens: dict[str, str] = request.app.state.rt.settings.printing_operator_tokens
    if not tokens:
        if not named:
            raise Problem(
                422,
                "Data tidak valid / Invalid data",
                "Sebutkan operator / name the operator",
                [{"field": "operator", "message": "Field required"}],
            )
        return named
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    owner = _token_owner(tokens, presented.strip()) if scheme.lower() == "bearer" else None
    if owner is None:
        raise Problem(
            401,
            "Token operator tidak sah / Operator token missing or invalid",
            headers={"WWW-Authenticate": 'Bearer realm="printing"'},
        )
    if named and named != owner:
        raise Problem(
            403,
            "Operator tidak sesuai token / Operator does not match the token",
            f"Token ini milik {owner} / this token belongs to {owner}",
        )
    return owner
