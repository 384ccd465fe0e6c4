"""Staff identity: passwords (argon2id), opaque bearer tokens, login with TOTP and rate limits.

Guarantees:
- Passwords are stored only as argon2id hashes (argon2-cffi's defaults), rehashed at login
  when the parameters change; at least 12 characters.
- Tokens are random, shown once, and stored only as their SHA-256. A session token dies after
  30 minutes unused or 12 hours in all; an API token at its expiry; any token at logout, when
  its user is disabled, or (enrolment tokens) once TOTP is confirmed.
- Users with a role in SECOND_FACTOR_ROLES give a TOTP code at every login; until they have
  enrolled, login gives them only a token that can enrol.
- Logins are limited per account and per IP; failures and lockouts are audited, never with the
  password or code.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlmodel import Session, col, func, select, update

from conveyor import audit
from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, DomainError, NotFound

# Passwords (argon2id, rules, equal-time checks) live on the belt, shared with the storefront.
from conveyor.passwords import MAX_PASSWORD_LENGTH as MAX_PASSWORD_LENGTH
from conveyor.passwords import MIN_PASSWORD_LENGTH as MIN_PASSWORD_LENGTH
from conveyor.passwords import WeakPassword as WeakPassword
from conveyor.passwords import check_password_rules as check_password_rules
from conveyor.passwords import generate_password as generate_password
from conveyor.passwords import hash_password as hash_password
from conveyor.passwords import needs_rehash, verify_password
from conveyor.settings import Settings
from models.base import utcnow
from models.staff import (
    LoginAttempt,
    Permission,
    Role,
    StaffToken,
    StaffUser,
    TokenKind,
    permissions_of,
)

SESSION_IDLE = timedelta(minutes=30)
SESSION_LIFETIME = timedelta(hours=12)
ENROLMENT_LIFETIME = timedelta(minutes=15)
TOKEN_PREFIX = "cvt_"  # noqa: S105 (a prefix, not a secret)
ISSUER = "Conveyor"


class RateLimited(DomainError):
    code = "rate_limited"


class InvalidRoles(DomainError):
    code = "invalid_roles"


def _verify_password(user: StaffUser | None, password: str) -> bool:
    return verify_password(user.password_hash if user else None, password) and user is not None


# -- Tokens and principals -----------------------------------------------------------------------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _issue(session: Session, user: StaffUser, kind: TokenKind, roles: list[str],
           expires_at: datetime, label: str = "") -> tuple[str, StaffToken]:
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = StaffToken(token_hash=token_digest(plain), staff_id=user.id, kind=kind,
                       roles=roles, label=label, expires_at=expires_at)
    session.add(token)
    session.flush()
    return plain, token


@dataclass(frozen=True)
class Principal:
    staff_id: uuid.UUID
    email: str
    roles: tuple[str, ...]
    token_id: uuid.UUID
    token_kind: str
    expires_at: datetime

    @property
    def permissions(self) -> frozenset[Permission]:
        if self.token_kind == TokenKind.ENROLMENT:
            return frozenset()
        return permissions_of(self.roles)

    def may(self, access: object) -> bool:
        if access == "enrolment":
            return True
        if self.token_kind == TokenKind.ENROLMENT:
            return False
        if access == "authenticated":
            return True
        return isinstance(access, Permission) and access in self.permissions

    def actor(self, request_id: str = "", client_ip: str = "") -> audit.Actor:
        return audit.Actor(self.staff_id, self.email, self.roles, request_id, client_ip)


def authenticate_bearer(session: Session, token: str, *, settings: Settings,
                        now: datetime | None = None) -> Principal | None:
    """The principal of a live token, or None. Touches `last_used_at` (at most once a minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    now = now or utcnow()
    row = session.exec(select(StaffToken, StaffUser)
                       .join(StaffUser, col(StaffUser.id) == StaffToken.staff_id)
                       .where(StaffToken.token_hash == token_digest(token))).first()
    if row is None:
        return None
    stored, user = row
    if stored.revoked_at is not None or now >= stored.expires_at or user.disabled_at:
        return None
    if stored.kind == TokenKind.SESSION and now - stored.last_used_at > SESSION_IDLE:
        return None
    if now - stored.last_used_at > timedelta(minutes=1):
        session.execute(update(StaffToken).where(col(StaffToken.id) == stored.id)
                        .values(last_used_at=now))
    roles = [r for r in stored.roles if r in user.roles]  # a role taken away stops working
    return Principal(user.id, user.email, tuple(roles), stored.id, stored.kind,
                     stored.expires_at)


# -- Login ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    token: str = ""
    expires_at: datetime | None = None
    roles: tuple[str, ...] = ()
    totp_enrolment_required: bool = False
    code: str = ""
    message: str = ""
    retry_after: int = 0


def _failures(session: Session, *, since: datetime, email: str | None = None,
              client_ip: str | None = None) -> tuple[int, datetime | None]:
    query = select(func.count(), func.min(LoginAttempt.at)).where(
        col(LoginAttempt.succeeded).is_(False), col(LoginAttempt.at) >= since)
    if email is not None:
        query = query.where(LoginAttempt.email == email)
    if client_ip is not None:
        query = query.where(LoginAttempt.client_ip == client_ip)
    count, oldest = session.exec(query).one()
    return int(count), oldest


def _retry_after(oldest: datetime | None, now: datetime, window: timedelta) -> int:
    if oldest is None:
        return int(window.total_seconds())
    return max(1, int((oldest + window - now).total_seconds()) + 1)


def login(
    *, uow: UnitOfWork, email: str, password: str, totp_code: str | None, settings: Settings,
    actor: audit.Actor, now: datetime | None = None,
) -> LoginResult:
    """Check a login; records the attempt and its audit entry whatever the outcome."""
    session = uow.session
    now = now or utcnow()
    email = email.strip().lower()
    window = timedelta(minutes=settings.admin_login_window_minutes)
    by_account, oldest_account = _failures(session, since=now - window, email=email)
    by_ip, oldest_ip = _failures(session, since=now - window, client_ip=actor.client_ip)
    if by_account >= settings.admin_login_failures_per_account:
        audit.record(session, audit.Actor(email=email, request_id=actor.request_id,
                                          client_ip=actor.client_ip),
                     "auth.login_refused", outcome="locked", target_type="staff",
                     target_id=email)
        return LoginResult(False, code="rate_limited",
                           message="Too many failed logins for this account; try later.",
                           retry_after=_retry_after(oldest_account, now, window))
    if by_ip >= settings.admin_login_failures_per_ip:
        audit.record(session, audit.Actor(email=email, request_id=actor.request_id,
                                          client_ip=actor.client_ip),
                     "auth.login_refused", outcome="locked", target_type="ip",
                     target_id=actor.client_ip)
        return LoginResult(False, code="rate_limited",
                           message="Too many failed logins from this address; try later.",
                           retry_after=_retry_after(oldest_ip, now, window))

    user = session.exec(select(StaffUser).where(StaffUser.email == email)).first()
    reason = ""
    if not _verify_password(user, password):
        reason = "bad_password" if user else "unknown_user"
    elif user is not None and user.disabled_at is not None:
        reason = "disabled"
    elif (user is not None and user.needs_second_factor and user.totp_confirmed
          and not _totp_ok(user, totp_code)):
        reason = "bad_totp"
    who = audit.Actor(user.id if user else None, email, tuple(user.roles) if user else (),
                      actor.request_id, actor.client_ip)
    if reason or user is None:
        session.add(LoginAttempt(email=email, client_ip=actor.client_ip, at=now,
                                 succeeded=False, reason=reason))
        audit.record(session, who, "auth.login_failed", outcome="failed",
                     target_type="staff", target_id=email, after={"reason": reason})
        if by_account + 1 >= settings.admin_login_failures_per_account:
            audit.record(session, who, "auth.lockout", outcome="locked",
                         target_type="staff", target_id=email,
                         after={"minutes": settings.admin_login_window_minutes})
        if reason == "bad_totp":
            return LoginResult(False, code="totp_required",
                               message="A valid code from your authenticator app is required.")
        return LoginResult(False, code="invalid_credentials",
                           message="Wrong email or password.")

    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.add(LoginAttempt(email=email, client_ip=actor.client_ip, at=now, succeeded=True))
    if user.needs_second_factor and not user.totp_confirmed:
        plain, token = _issue(session, user, TokenKind.ENROLMENT, list(user.roles),
                              now + ENROLMENT_LIFETIME)
        audit.record(session, who, "auth.login", target_type="staff", target_id=email,
                     after={"token_kind": token.kind, "totp_enrolment_required": True})
        return LoginResult(True, plain, token.expires_at, tuple(user.roles),
                           totp_enrolment_required=True)
    plain, token = _issue(session, user, TokenKind.SESSION, list(user.roles),
                          now + SESSION_LIFETIME)
    audit.record(session, who, "auth.login", target_type="staff", target_id=email,
                 after={"token_kind": token.kind})
    return LoginResult(True, plain, token.expires_at, tuple(user.roles))


def _totp_ok(user: StaffUser, code: str | None) -> bool:
    return bool(code and user.totp_secret
                and pyotp.TOTP(user.totp_secret).verify(code, valid_window=1))


def logout(*, uow: UnitOfWork, principal: Principal, actor: audit.Actor) -> None:
    token = uow.session.get(StaffToken, principal.token_id, with_for_update=True)
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
    audit.record(uow.session, actor, "auth.logout", target_type="token",
                 target_id=str(principal.token_id))


# -- TOTP ----------------------------------------------------------------------------------------


def enrol_totp(*, uow: UnitOfWork, principal: Principal, actor: audit.Actor) -> tuple[str, str]:
    """Start (or restart) enrolment; returns (secret, provisioning URI) for an authenticator."""
    user = uow.session.get(StaffUser, principal.staff_id, with_for_update=True)
    if user is None:
        raise NotFound("No such staff user.")
    if user.totp_confirmed:
        raise Conflict("A second factor is already set up; ask an admin to reset it.")
    user.totp_secret = pyotp.random_base32()
    audit.record(uow.session, actor, "auth.totp_enrol", target_type="staff",
                 target_id=user.email)
    uri = pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return user.totp_secret, uri


class InvalidCode(DomainError):
    code = "invalid_code"


def confirm_totp(*, uow: UnitOfWork, principal: Principal, code: str,
                 actor: audit.Actor) -> None:
    """Finish enrolment with a current code; enrolment tokens stop working."""
    session = uow.session
    user = session.get(StaffUser, principal.staff_id, with_for_update=True)
    if user is None or not user.totp_secret or user.totp_confirmed:
        raise Conflict("Start enrolment first: POST /api/auth/totp/enrol.")
    if not pyotp.TOTP(user.totp_secret).verify(code, valid_window=1):
        raise InvalidCode("That code is not valid; check the time on your device.")
    user.totp_confirmed = True
    session.execute(update(StaffToken).where(col(StaffToken.staff_id) == user.id,
                                             col(StaffToken.kind) == TokenKind.ENROLMENT,
                                             col(StaffToken.revoked_at).is_(None))
                    .values(revoked_at=utcnow()))
    audit.record(session, actor, "auth.totp_confirm", target_type="staff",
                 target_id=user.email)


# -- Staff management (command line and admin) ---------------------------------------------------


def _valid_roles(roles: list[str]) -> list[str]:
    known = {r.value for r in Role}
    unknown = [r for r in roles if r not in known]
    if not roles or unknown:
        raise InvalidRoles(f"Roles must be some of {', '.join(sorted(known))}.",
                           details={"unknown": unknown})
    return sorted(set(roles))


def create_staff(*, uow: UnitOfWork, email: str, roles: list[str], password: str,
                 actor: audit.Actor) -> StaffUser:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise DomainError("That is not an email address.")
    check_password_rules(password, email=email)
    if uow.session.exec(select(StaffUser).where(StaffUser.email == email)).first():
        raise Conflict(f"A staff user {email} exists already.")
    user = StaffUser(email=email, roles=_valid_roles(roles), password_hash=hash_password(password))
    uow.session.add(user)
    uow.flush()
    audit.record(uow.session, actor, "staff.create", target_type="staff", target_id=email,
                 after={"email": email, "roles": user.roles})
    return user


def disable_staff(*, uow: UnitOfWork, email: str, actor: audit.Actor) -> StaffUser:
    session = uow.session
    user = session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())
                        .with_for_update()).first()
    if user is None:
        raise NotFound(f"No staff user {email}.")
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        session.execute(update(StaffToken).where(col(StaffToken.staff_id) == user.id,
                                                 col(StaffToken.revoked_at).is_(None))
                        .values(revoked_at=user.disabled_at))
        audit.record(session, actor, "staff.disable", target_type="staff",
                     target_id=user.email, before={"disabled": False},
                     after={"disabled": True})
    return user


def set_password(*, uow: UnitOfWork, email: str, password: str, actor: audit.Actor) -> None:
    """Replace a password; every token of the user stops working."""
    session = uow.session
    user = session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())
                        .with_for_update()).first()
    if user is None:
        raise NotFound(f"No staff user {email}.")
    check_password_rules(password, email=user.email)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    session.execute(update(StaffToken).where(col(StaffToken.staff_id) == user.id,
                                             col(StaffToken.revoked_at).is_(None))
                    .values(revoked_at=user.password_changed_at))
    audit.record(session, actor, "staff.password_change", target_type="staff",
                 target_id=user.email)


def issue_api_token(*, uow: UnitOfWork, email: str, roles: list[str], days: int, label: str,
                    actor: audit.Actor) -> tuple[str, StaffToken]:
    """An integration's token with some of the user's roles, valid for `days`."""
    session = uow.session
    user = session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())
                        ).first()
    if user is None or user.disabled_at is not None:
        raise NotFound(f"No active staff user {email}.")
    wanted = _valid_roles(roles)
    if not set(wanted) <= set(user.roles):
        raise InvalidRoles(f"{user.email} does not have the role(s) "
                           f"{', '.join(sorted(set(wanted) - set(user.roles)))}.")
    if not 1 <= days <= 366:
        raise DomainError("A token lives between 1 and 366 days.")
    plain, token = _issue(session, user, TokenKind.API, wanted, utcnow() + timedelta(days=days),
                          label=label[:120])
    audit.record(session, actor, "staff.token_issue", target_type="staff",
                 target_id=user.email,
                 after={"roles": wanted, "days": days, "label": token.label,
                        "token_id": str(token.id)})
    return plain, token
