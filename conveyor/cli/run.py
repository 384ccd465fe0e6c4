"""`conveyor run`: everything a new user needs, started in one terminal.

Steps: migrate the database, load the demo catalogue the first time, find or start Redis,
start localstripe when no real Stripe keys are set (and register the webhook with it), then
run the storefront, the admin API, the workers (Stripe-calling queues in a process of their
own, so a slow Stripe never holds up screening) and the relay under honcho until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import typer
from honcho.manager import Manager
from sqlmodel import select

from admin import identity
from conveyor import audit
from conveyor.cli.demo_data import catalogue_is_empty, load_demo_data
from conveyor.db import Database
from conveyor.local_services import (
    port_open,
    redis_answers,
    register_webhook,
    start_localstripe,
    start_redis,
)
from conveyor.messages import QUEUES, STRIPE_QUEUES
from conveyor.migrate import upgrade
from conveyor.settings import Settings
from models.staff import Role, StaffUser

DEMO_ADMIN = "admin@conveyor.localhost"


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
    staff_login = ensure_demo_admin(settings)
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

        _banner(settings, stripe_local=settings.stripe_secret_key is None,
                staff_login=staff_login)
        manager = Manager()
        conveyor = f"{Path(sys.executable).parent / 'conveyor'}"
        others = ",".join(q for q in QUEUES if q not in STRIPE_QUEUES)
        for name, command in (("storefront", "storefront"), ("admin", "admin"),
                              ("worker", f"worker --queues {others}"),
                              ("stripe-worker", f"worker --queues {','.join(STRIPE_QUEUES)}"),
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


def ensure_demo_admin(settings: Settings) -> str:
    """Create the demo's admin on the first run; the password is shown this once only."""
    db = Database.from_settings(settings, pool_size=1)
    try:
        with db.unit_of_work() as uow:
            if uow.session.exec(select(StaffUser.id)).first() is not None:
                return (f"{DEMO_ADMIN} (password shown on the first run; "
                        f"new one: conveyor staff password {DEMO_ADMIN})")
            password = identity.generate_password()
            identity.create_staff(uow=uow, email=DEMO_ADMIN, roles=[Role.ADMIN],
                                  password=password, actor=audit.Actor(email="conveyor run"))
    finally:
        db.dispose()
    return f"{DEMO_ADMIN} / {password}   (shown once; TOTP enrolment at first login)"


def _banner(settings: Settings, *, stripe_local: bool, staff_login: str) -> None:
    stripe = (f"localstripe on http://127.0.0.1:{settings.localstripe_port} "
              "(test card 4242 4242 4242 4242)" if stripe_local else settings.stripe_api_base)
    lines = [
        "",
        "  Conveyor is starting:",
        f"    storefront   {settings.base_url}",
        f"    admin API    http://{settings.admin_host}:{settings.admin_port}/api "
        "(OpenAPI: /api/openapi.json)",
        f"    staff login  {staff_login}",
        f"    database     {settings.effective_database_url}",
        f"    redis        {settings.redis_url}",
        f"    stripe       {stripe}",
        f"    emails       {settings.mail_dir if not settings.smtp_host else settings.smtp_host}",
        "  Press Ctrl-C to stop.",
        "",
    ]
    typer.echo("\n".join(lines))
