"""Operators: a bearer token each, with a role. Tokens are stored as SHA-256 digests.

Roles: ``operator`` registers walk-in and phone requests and reads applicants' data (each read is
recorded in ``personal_data_access``); ``supervisor`` may do that too, plus run the retention job
on demand. ``INTAKE_OPERATORS`` is the source of truth: operators not listed there are deactivated
at start.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from fastapi import Request

from shared.http import Problem
from shared.logging import get_logger

from .settings import DEV_OPERATOR_TOKEN, DEV_SUPERVISOR_TOKEN, OperatorSeed

log = get_logger(__name__)

_DEV_DIGESTS = {
    hashlib.sha256(t.encode()).hexdigest() for t in (DEV_OPERATOR_TOKEN, DEV_SUPERVISOR_TOKEN)
}


@dataclass(frozen=True)
class Operator:
    operator_id: str
    name: str
    role: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _digest_of(seed: OperatorSeed) -> str:
    if seed.token_sha256:
        return seed.token_sha256
    assert seed.token is not None
    return token_digest(seed.token.get_secret_value())


async def seed_operators(conn: asyncpg.Connection, seeds: Sequence[OperatorSeed]) -> None:
    async with conn.transaction():
        for seed in seeds:
            await conn.execute(
                """
                INSERT INTO operators (operator_id, name, role, token_sha256, active)
                VALUES ($1, $2, $3, $4, true)
                ON CONFLICT (operator_id) DO UPDATE SET name = $2, role = $3, token_sha256 = $4,
                    active = true, updated_at = now()
                """,
                seed.id,
                seed.name,
                seed.role,
                _digest_of(seed),
            )
        await conn.execute(
            "UPDATE operators SET active = false, updated_at = now()"
            " WHERE active AND NOT operator_id = ANY($1::text[])",
            [s.id for s in seeds],
        )
    if any(_digest_of(s) in _DEV_DIGESTS for s in seeds):
        log.warning("development operator tokens are active: set INTAKE_OPERATORS in production")


async def record_access(
    conn: asyncpg.Connection, operator: Operator, request_id: uuid.UUID, action: str
) -> None:
    await conn.execute(
        "INSERT INTO personal_data_access (operator_id, request_id, action) VALUES ($1, $2, $3)",
        operator.operator_id,
        request_id,
        action,
    )


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "Perlu token operator / Operator token required",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="ketanmu-intake"'},
    )


def require(*roles: str) -> Callable[[Request], Awaitable[Operator]]:
    """A dependency: the operator behind ``Authorization: Bearer <token>``, with one of ``roles``."""

    async def dependency(request: Request) -> Operator:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Kirim header Authorization: Bearer <token> / send a bearer token")
        async with request.app.state.rt.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT operator_id, name, role FROM operators"
                " WHERE token_sha256 = $1 AND active",
                token_digest(token.strip()),
            )
        if row is None:
            raise _unauthorized("Token tidak dikenal atau dicabut / unknown or revoked token")
        operator = Operator(row["operator_id"], row["name"], row["role"])
        if operator.role not in roles:
            raise Problem(
                403,
                "Peran tidak diizinkan / Role not allowed",
                f"Perlu peran / needs role: {' atau / or '.join(roles)}",
            )
        return operator

    return dependency


ANY_OPERATOR = require("operator", "supervisor")
SUPERVISOR = require("supervisor")
