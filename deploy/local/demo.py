"""Push a batch of requests through the running system to delivered and print each timeline.

    python -m deploy.local.demo [--requests 10] [--timeout 120]

It plays the applicant (registers over HTTP) and the operator (claims and marks each print job
printed); the partner sandbox plays the couriers. Exit code 1 if any request is not delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx

KECAMATAN = [("Mojosari", "61382"), ("Sooko", "61361"), ("Trowulan", "61362"), ("Pacet", "61374")]
NAMES = ["Siti Aminah", "Budi Santoso", "Dewi Lestari", "Agus Salim", "Rina Wati", "Joko Susilo"]
DOCUMENTS = ["ktp_el", "kk", "kia", "akta_kelahiran", "akta_kematian"]
# Intake's GET /requests/{id} is for operators: the dev token (services/intake/README.md) unless
# INTAKE_OPERATOR_TOKEN says otherwise.
OPERATOR_TOKEN = os.environ.get("INTAKE_OPERATOR_TOKEN", "ketanmu-dev-operator-token")


def operator_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def sample_nik(rng: random.Random) -> str:
    """A NIK of the right shape: 35 16 xx (Kab. Mojokerto), birth date (+40 for women), serial."""
    day = rng.randint(1, 28) + (40 if rng.random() < 0.5 else 0)
    return f"3516{rng.randint(1, 18):02d}{day:02d}{rng.randint(1, 12):02d}{rng.randint(60, 99):02d}{rng.randint(1, 9999):04d}"


def sample_phone(rng: random.Random) -> str:
    return f"0812{rng.randint(10_000_000, 99_999_999)}"


def sample_request(rng: random.Random, partner: str | None = None) -> dict[str, Any]:
    kecamatan, postal = rng.choice(KECAMATAN)
    return {
        "document_type": rng.choice(DOCUMENTS),
        "channel": "web",
        "applicant": {"name": rng.choice(NAMES), "nik": sample_nik(rng), "phone": sample_phone(rng)},
        "delivery": {
            "partner": partner or rng.choice(["pos", "jnt"]),
            "address": {
                "street": f"Jl. Raya {kecamatan} No. {rng.randint(1, 200)}",
                "rt_rw": f"{rng.randint(1, 9):03d}/{rng.randint(1, 9):03d}",
                "kelurahan": kecamatan,
                "kecamatan": kecamatan,
                "kabupaten_kota": "Kabupaten Mojokerto",
                "provinsi": "Jawa Timur",
                "postal_code": postal,
            },
        },
    }


async def mark_printed(http: httpx.AsyncClient, printing: str, request_id: str, operator: str,
                       timeout_s: float = 60.0) -> None:
    """The operator robot: wait for the job in the queue, claim it, mark it printed."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await http.post(f"{printing}/print-jobs/{request_id}/claim", json={"operator": operator})
        if r.status_code == 200:
            break
        if r.status_code != 404 or time.monotonic() > deadline:
            raise RuntimeError(f"claim {request_id}: {r.status_code} {r.text}")
        await asyncio.sleep(0.2)
    await print_job(http, printing, request_id, operator)


async def print_job(http: httpx.AsyncClient, printing: str, request_id: str, operator: str) -> None:
    """Mark a job printed, with a document number made from the request's id."""
    number = f"3516-{uuid.UUID(request_id).hex[:10].upper()}"
    r = await http.post(f"{printing}/print-jobs/{request_id}/printed",
                        json={"document_number": number, "operator": operator})
    r.raise_for_status()


async def wait_status(http: httpx.AsyncClient, intake: str, request_id: str, statuses: set[str],
                      timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = (await http.get(f"{intake}/requests/{request_id}", headers=operator_headers())).json()
        if body["status"] in statuses and (body["status"] != "delivered" or body["cod_paid"]):
            return body
        if time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.3)


async def run(n: int, timeout_s: float, intake: str, printing: str, seed: int | None) -> int:
    rng = random.Random(seed)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        ids = []
        for i in range(n):
            r = await http.post(f"{intake}/requests", json=sample_request(rng))
            if r.status_code != 201:
                print(f"registration {i} refused: {r.status_code} {r.text}", file=sys.stderr)
                return 1
            ids.append(r.json()["request_id"])
        print(f"registered {n} requests; the operator robot prints them...")
        await asyncio.gather(*(mark_printed(http, printing, rid, "operator-demo") for rid in ids))
        print("printed; couriers (sandbox) pick up, collect Rp 20.000 COD and deliver...")
        results = await asyncio.gather(
            *(wait_status(http, intake, rid, {"delivered"}, timeout_s) for rid in ids)
        )
    delivered = 0
    for body in results:
        ok = body["status"] == "delivered" and body["cod_paid"]
        delivered += ok
        print(f"\n{body['tracking_code']}  {body['document_type']:<15} via {body['partner']:<4}"
              f"  status: {body['status']}{' + COD paid' if body['cod_paid'] else ''}")
        t0 = None
        for step in body["timeline"]:
            at = datetime.fromisoformat(step["occurred_at"]).strftime("%H:%M:%S.%f")[:12]
            t0 = t0 or at
            detail = ", ".join(f"{k}={v}" for k, v in step["detail"].items())
            print(f"    {at}  {step['event']:<20} {detail}")
    elapsed = time.monotonic() - started
    print(f"\n{delivered}/{n} requests delivered with COD paid in {elapsed:.1f}s")
    return 0 if delivered == n else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.demo")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--intake", default="http://127.0.0.1:8001")
    parser.add_argument("--printing", default="http://127.0.0.1:8002")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.requests, args.timeout, args.intake, args.printing, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
