"""Run the whole system on one machine without Docker: the four services and the partner sandbox,
each as its own process, against the local Kafka and PostgreSQL (``deploy/local/infra.sh``).

    python -m deploy.local.system up      # start what is not running, wait until healthy
    python -m deploy.local.system down    # stop the services and the sandbox (infra keeps running)
    python -m deploy.local.system status

``make run`` calls ``infra.sh up`` and then ``up``. Logs go to ``.local/run/<name>.log`` and pids
to ``.local/run/<name>.pid``. The e2e tests and the benchmark use the ``System`` class with their
own ports, database and consumer groups, so they never disturb a running ``make run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "printing", "courier", "notify")
DEFAULT_PORTS = {"intake": 8001, "printing": 8002, "courier": 8003, "notify": 8004, "sandbox": 8090}


@dataclass
class System:
    """The processes of one Ketanmu system: ``ports`` per process, shared ``env`` for all."""

    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    env: dict[str, str] = field(default_factory=dict)
    run_dir: Path = ROOT / ".local" / "run"
    python: str = sys.executable
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        """The physical name of a contract topic in this system's namespace."""
        return self.env.get("KAFKA_TOPIC_PREFIX", "") + name

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _env_for(self, name: str) -> dict[str, str]:
        sandbox = self.url("sandbox")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "JNT_BASE_URL": f"{sandbox}/jnt",
            "POS_BASE_URL": f"{sandbox}/pos",
            "WHATSAPP_BASE_URL": f"{sandbox}/whatsapp",
            "SANDBOX_COURIER_URL": self.url("courier"),
            "SANDBOX_PORT": str(self.ports["sandbox"]),
            **self.env,
        }
        if name != "sandbox":
            env["HTTP_PORT"] = str(self.ports[name])
        return env

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        try:
            pid = int(self._pid_path(name).read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, name: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        module = "sandbox" if name == "sandbox" else f"services.{name}"
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [self.python, "-m", module],
            cwd=ROOT,
            env=self._env_for(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        self._pid_path(name).write_text(str(proc.pid))

    def health_url(self, name: str) -> str:
        return f"{self.url(name)}/sandbox/health" if name == "sandbox" else f"{self.url(name)}/health"

    def wait_healthy(self, names: list[str] | None = None, timeout_s: float = 60.0) -> None:
        names = names or list(self.ports)
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending:
            for name in sorted(pending):
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    tail = self.log_path(name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
                try:
                    if httpx.get(self.health_url(name), timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout_s:.0f}s: {sorted(pending)}")
            if pending:
                time.sleep(0.3)

    def start_all(self, timeout_s: float = 90.0) -> None:
        names = ["sandbox", *SERVICES]
        for name in names:
            if self.pid(name) is None:
                self.start(name)
        self.wait_healthy(names, timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, sig)
        proc = self.procs.get(name)
        if proc is not None:
            proc.wait(timeout=30)
        else:
            _wait_gone(pid, 30)

    def stop(self, name: str) -> None:
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            if name in self.procs:
                self.procs[name].wait(timeout=20)
            else:
                _wait_gone(pid, 20)
        except (subprocess.TimeoutExpired, TimeoutError):
            os.kill(pid, signal.SIGKILL)
        self._pid_path(name).unlink(missing_ok=True)

    def stop_all(self) -> None:
        for name in [*SERVICES, "sandbox"]:
            self.stop(name)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} still alive")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.system")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    system = System()
    if args.command == "up":
        try:
            system.start_all()
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    elif args.command == "down":
        system.stop_all()
        print("services and sandbox stopped (Kafka and PostgreSQL keep running: make infra-down)")
        return 0
    for name in ["sandbox", *SERVICES]:
        pid = system.pid(name)
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"  {name:<9} {system.url(name):<24} {state:<22} log: {system.log_path(name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
