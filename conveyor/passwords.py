"""Passwords for staff and customers: argon2id hashes, one set of rules, equal-time checks.

Guarantees:
- Only argon2id hashes (argon2-cffi's defaults) are stored; `needs_rehash` says when a stored
  hash was made with older parameters, so a successful sign-in can replace it.
- `verify_password` takes as long for an unknown account (no hash) as for a wrong password,
  so response times do not tell whether an account exists.
- A password has at least MIN_PASSWORD_LENGTH characters (and at most MAX_PASSWORD_LENGTH).
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from conveyor.errors import DomainError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id
_DUMMY_HASH = _hasher.hash("a password nobody has, for equal timing")


class WeakPassword(DomainError):
    code = "weak_password"


def check_password_rules(password: str, *, email: str = "") -> None:
    """Raise WeakPassword with a message for a person when `password` breaks a rule."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"A password has at most {MAX_PASSWORD_LENGTH} characters.")
    if len(set(password)) < 4:
        raise WeakPassword("A password needs more than three different characters.")
    name = email.split("@")[0].lower()
    if len(name) >= 3 and name in password.lower():
        raise WeakPassword("A password must not contain the email's name.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches `stored_hash`; with no hash, False after the same work."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def generate_password() -> str:
    return secrets.token_urlsafe(15)
