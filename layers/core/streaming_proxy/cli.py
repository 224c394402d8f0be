"""`streamproxy`: command-line tools for backends and operators (mint subscribe tokens)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .auth import AppRegistry
from .config import AppConfig, Settings
from .errors import ProxyError


def _apps(settings: Settings) -> dict[str, AppConfig]:
    if settings.apps:
        return settings.apps
    try:  # no APPS configured: fall back to the local stack's dev app, if installed
        import json

        from devstack.settings import DevSettings
    except ImportError:
        return {}
    raw = json.loads(DevSettings().apps_json())
    return {app_id: AppConfig.model_validate(cfg) for app_id, cfg in raw.items()}


def token_command(args: argparse.Namespace) -> int:
    settings = Settings()
    apps = _apps(settings)
    if not apps:
        print("no apps configured: set APPS (or APPS_SECRET_ARN)", file=sys.stderr)
        return 2
    app_id = args.app or (next(iter(apps)) if len(apps) == 1 else None)
    if app_id is None:
        print(f"several apps configured, choose one with --app: {', '.join(apps)}", file=sys.stderr)
        return 2
    registry = AppRegistry(apps)
    app = registry.get(app_id)
    if app is None:
        print(f"unknown app '{app_id}'", file=sys.stderr)
        return 2
    ttl = args.ttl or settings.token_default_ttl_seconds
    try:
        token, _ = registry.mint_token(app, args.channel, ttl)
    except ProxyError as e:
        print(e.message, file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamproxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a subscribe token for one or more channels")
    token.add_argument("--channel", action="append", required=True, help="repeat for more")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    token.add_argument("--app", default=None, help="app id (default: the only configured app)")
    args = parser.parse_args(argv)
    return token_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
