"""`conveyor staff ...` and `conveyor audit verify`: staff accounts from the command line."""

from __future__ import annotations

import getpass

import typer

from admin import identity
from conveyor import audit
from conveyor.db import Database
from conveyor.errors import DomainError
from conveyor.settings import Settings
from models.staff import Role

staff_app = typer.Typer(no_args_is_help=True, help="Staff users and API tokens.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")
ROLES = ", ".join(r.value for r in Role)


def _actor() -> audit.Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return audit.Actor(email=f"cli:{user}")


def _db() -> Database:
    return Database.from_settings(Settings(), pool_size=1)


def _fail(exc: DomainError) -> typer.Exit:
    typer.echo(f"error: {exc.message}", err=True)
    return typer.Exit(1)


def _ask_password(email: str) -> tuple[str, bool]:
    """A typed password (asked twice), or a generated one if the user presses Enter."""
    first = getpass.getpass(f"Password for {email} (Enter to generate one): ")
    if not first:
        return identity.generate_password(), True
    if getpass.getpass("Again: ") != first:
        typer.echo("error: the passwords differ", err=True)
        raise typer.Exit(1)
    return first, False


@staff_app.command("add")
def add(email: str, role: list[str] = typer.Option(..., "--role", help=f"One of: {ROLES}."),
        generate: bool = typer.Option(False, help="Generate the password; do not ask.")) -> None:
    """Create a staff user; the password is asked for, or generated and printed once."""
    password, generated = ((identity.generate_password(), True) if generate
                           else _ask_password(email))
    db = _db()
    try:
        with db.unit_of_work() as uow:
            user = identity.create_staff(uow=uow, email=email, roles=role, password=password,
                                         actor=_actor())
    except DomainError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()
    typer.echo(f"created {user.email} with role(s) {', '.join(user.roles)}")
    if generated:
        typer.echo(f"password (shown once): {password}")
    if user.needs_second_factor:
        typer.echo("this role needs a TOTP code at login: the first login returns a token "
                   "that can only enrol one (POST /api/auth/totp/enrol)")


@staff_app.command("disable")
def disable(email: str) -> None:
    """Disable a staff user; their tokens stop working at once."""
    db = _db()
    try:
        with db.unit_of_work() as uow:
            user = identity.disable_staff(uow=uow, email=email, actor=_actor())
    except DomainError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()
    typer.echo(f"disabled {user.email}")


@staff_app.command("password")
def password(email: str) -> None:
    """Set a new password for a staff user (asked for, or generated and printed once)."""
    new, generated = _ask_password(email)
    db = _db()
    try:
        with db.unit_of_work() as uow:
            identity.set_password(uow=uow, email=email, password=new, actor=_actor())
    except DomainError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()
    typer.echo(f"password of {email} changed; their sessions were ended")
    if generated:
        typer.echo(f"password (shown once): {new}")


@staff_app.command("token")
def token(email: str, role: list[str] = typer.Option(..., "--role", help=f"One of: {ROLES}."),
          expires: int = typer.Option(30, "--expires", help="Days until it expires (1-366)."),
          label: str = typer.Option("", help="What the token is for.")) -> None:
    """Issue an API token for an integration, with some of the user's roles; printed once."""
    db = _db()
    try:
        with db.unit_of_work() as uow:
            plain, issued = identity.issue_api_token(uow=uow, email=email, roles=role,
                                                     days=expires, label=label,
                                                     actor=_actor())
    except DomainError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()
    typer.echo(f"token for {email} ({', '.join(issued.roles)}), expires "
               f"{issued.expires_at:%Y-%m-%d %H:%M} UTC; shown once:")
    typer.echo(plain)


@audit_app.command("verify")
def verify() -> None:
    """Walk the hash chain; name the first entry that was altered, removed or reordered."""
    db = _db()
    try:
        with db.read_session() as session:
            report = audit.verify_chain(session)
    finally:
        db.dispose()
    if report.ok:
        typer.echo(f"audit trail intact: {report.checked} entries")
        return
    typer.echo(f"audit trail BROKEN at entry {report.broken_id}: {report.reason} "
               f"({report.checked} entries before it check out)", err=True)
    raise typer.Exit(1)
