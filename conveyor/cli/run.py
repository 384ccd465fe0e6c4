"""`conveyor run`: everything a new user needs, started in one terminal.

Steps: migrate the database, load the demo catalogue the first time, find or start Redis,
start localstripe when no real Stripe keys are set (and register the webhook with it), then
run the storefront, the workers and the relay under honcho until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import typer
from honcho.manager import Manager

from conveyor.cli.demo_data import catalogue_is_empty, load_demo_data
from conveyor.local_services import (
    port_open,
    redis_answers,
    register_webhook,
    start_localstripe,
    start_redis,
)
from conveyor.migrate import upgrade
from conveyor.settings import Settings


def _local_stripe_env(settings: Settings) -> dict[str, str]:
    base = f"http://127.0.0.1:{settings.localstripe_port}"
    return {
        "STRIPE_SECRET_KEY": "sk_test_localstripe",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_localstripe",
        "STRIPE_API_BASE": base,
        "STRIPE_JS_URL": f"{base}/js.stripe.com/v3/",
        # A fresh secret each run: localstripe forgets its webhooks when it stops anyway.
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
    }


def run_everything(settings: Settings) -> None:
    var = settings.var_dir
    logs = var / "log"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)

    typer.echo("conveyor: applying database migrations")
    upgrade(settings)
    if catalogue_is_empty(settings):
        typer.echo("conveyor: loading the demo catalogue (first run)")
        typer.echo(load_demo_data(settings))
    settings.session_secret  # noqa: B018  (created once here, before processes race for it)

    try:
        if redis_answers(settings.redis_url):
            typer.echo(f"conveyor: using the Redis at {settings.redis_url}")
        else:
            typer.echo("conveyor: no Redis answers; starting one for this session")
            started.append(start_redis(settings.redis_url, var / "redis", logs / "redis.log"))

        if settings.stripe_secret_key is None:
            stripe_env = _local_stripe_env(settings)
            port = settings.localstripe_port
            if port_open("127.0.0.1", port):
                typer.echo(f"conveyor: port {port} is taken; stop what runs there (an earlier "
                           "localstripe?) or set LOCALSTRIPE_PORT, and try again", err=True)
                raise typer.Exit(1)
            typer.echo("conveyor: no Stripe keys set; starting localstripe as Stripe")
            started.append(start_localstripe(port, logs / "localstripe.log"))
            register_webhook(stripe_env["STRIPE_API_BASE"], "conveyor",
                             f"http://127.0.0.1:{settings.storefront_port}/stripe/webhook",
                             stripe_env["STRIPE_WEBHOOK_SECRET"])
            env.update(stripe_env)

        _banner(settings, stripe_local=settings.stripe_secret_key is None)
        manager = Manager()
        conveyor = f"{Path(sys.executable).parent / 'conveyor'}"
        for name, command in (("storefront", "storefront"), ("worker", "worker"),
                              ("relay", "relay")):
            manager.add_process(name, f"{conveyor} {command}", env=env)
        manager.loop()
        raise typer.Exit(manager.returncode or 0)
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


def _banner(settings: Settings, *, stripe_local: bool) -> None:
    stripe = (f"localstripe on http://127.0.0.1:{settings.localstripe_port} "
              "(test card 4242 4242 4242 4242)" if stripe_local else settings.stripe_api_base)
    lines = [
        "",
        "  Conveyor is starting:",
        f"    storefront   {settings.base_url}",
        f"    database     {settings.effective_database_url}",
        f"    redis        {settings.redis_url}",
        f"    stripe       {stripe}",
        f"    emails       {settings.mail_dir if not settings.smtp_host else settings.smtp_host}",
        "  Press Ctrl-C to stop.",
        "",
    ]
    typer.echo("\n".join(lines))
