"""``python -m sandbox``: serve the sandbox on SANDBOX_HOST:SANDBOX_PORT (127.0.0.1:8090)."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from shared.gc_tuning import settle_gc


def main() -> None:
    settings = SandboxSettings()
    app = create_app(settings)
    settle_gc()  # as the services do: startup's objects frozen, young collections rarer
    # access_log off: at benchmark rates it costs more than the sandbox's own work.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        timeout_keep_alive=30,  # longer than the clients' keep-alive: no reuse-while-closing race
    )


if __name__ == "__main__":
    main()
