"""`medscan serve`: start the service with the settings from the environment."""

from __future__ import annotations

import argparse

from app.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medscan", description="MedScan medical-image screening service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve every model under the models folder")
    serve.add_argument("--host", default=None, help="default: MEDSCAN_HOST or 0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: MEDSCAN_PORT or 8000")
    serve.add_argument("--workers", type=int, default=None, help="default: MEDSCAN_WORKERS or 1")
    args = parser.parse_args(argv)

    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
