"""Serve one of gwbench.asgi's factories with uvicorn, configured as `partner-gateway serve` does.

python bench/gwbench/serve.py {service,trivial,floor,sandbox} --port P [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["service", "trivial", "floor", "sandbox"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        from partner_gateway.cli import UVICORN_OPTIONS as options
    except ImportError:  # an older service: the options its CLI had then
        options = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 10}
    uvicorn.run(
        f"gwbench.asgi:{args.app}",
        factory=True,
        app_dir=str(BENCH_DIR),
        host=args.host,
        port=args.port,
        workers=args.workers,
        **{**options, "server_header": False},  # the options of `partner-gateway serve`
    )


if __name__ == "__main__":
    main(sys.argv[1:])
