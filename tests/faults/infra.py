"""The fault tier's own Kafka broker and PostgreSQL, which it restarts on purpose.

They run beside the shared ones (``make run``'s 9092/5432, the test suite's 19092), on their own
ports and data directories, so that breaking them disturbs no one else's tests:

    FAULTS_KAFKA_PORT (29092), FAULTS_KAFKA_CONTROLLER_PORT (29093), FAULTS_PGPORT (25432),
    FAULTS_KAFKA_HOME (.local/kafka-faults), FAULTS_PG_HOME (.local/pg-faults)

``deploy/local/infra.sh`` starts and restarts them (``KAFKA_HOME``/``PG_HOME`` select them).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.local.system import ROOT

INFRA_SH = ROOT / "deploy" / "local" / "infra.sh"
SHARED_PORTS = {9092, 9093, 19092, 19093, 5432}


@dataclass(frozen=True)
class FaultInfra:
    kafka_port: int
    controller_port: int
    pg_port: int
    kafka_home: str
    pg_home: str

    @classmethod
    def from_env(cls) -> FaultInfra:
        env = os.environ.get
        infra = cls(
            kafka_port=int(env("FAULTS_KAFKA_PORT", "29092")),
            controller_port=int(env("FAULTS_KAFKA_CONTROLLER_PORT", "29093")),
            pg_port=int(env("FAULTS_PGPORT", "25432")),
            kafka_home=env("FAULTS_KAFKA_HOME", str(ROOT / ".local" / "kafka-faults")),
            pg_home=env("FAULTS_PG_HOME", str(ROOT / ".local" / "pg-faults")),
        )
        taken = {infra.kafka_port, infra.controller_port, infra.pg_port} & SHARED_PORTS
        if taken:
            raise RuntimeError(f"the fault tier restarts its infrastructure: it must not use the "
                               f"shared ports {sorted(taken)}")
        return infra

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://ketanmu:ketanmu@127.0.0.1:{self.pg_port}/ketanmu"

    def _infra(self, command: str) -> None:
        env = {
            **os.environ,
            "KAFKA_HOME": self.kafka_home,
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "PG_HOME": self.pg_home,
            "PGPORT": str(self.pg_port),
        }
        done = subprocess.run(["bash", str(INFRA_SH), command], check=False, env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"infra.sh {command} failed:\n{done.stdout}\n{done.stderr}")

    def kafka_pid(self) -> int:
        return int(Path(self.kafka_home, "kafka.pid").read_text())

    def up(self) -> None:
        self._infra("up")

    def restart_kafka(self) -> None:
        self._infra("kafka-restart")

    def restart_postgres(self) -> None:
        self._infra("pg-restart")
