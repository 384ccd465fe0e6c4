"""Runs localstripe, the local Stripe stand-in, for development and tests only.

Two differences from `localstripe --port N`: it listens on 127.0.0.1 only, and its pickle
persistence is switched off (it rewrites one shared file after every change and slows down as
data grows, see shared/LOCALSTRIPE.md). Its data lives as long as the process.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    from aiohttp import web
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
