"""Customer accounts (optional at checkout), their saved addresses, one-time links, sign-in
attempts, and the notes staff keep on a customer's file.

A guest's orders carry only an email; they join an account (`orders.customer_id`) once that
account's owner has proved the email is theirs. Deleting an account erases or anonymises the
personal data here, while orders keep what the law requires.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Text, text
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class Customer(SQLModel, table=True):
    __tablename__ = "customer"
    __table_args__ = (
        # One account per address, whatever its case; erased accounts free their address.
        Index("uq_customer_email_lower", text("lower(email)"), unique=True,
              postgresql_where=text("deleted_at IS NULL"),
              sqlite_where=text("deleted_at IS NULL")),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=254)
    password_hash: str | None = Field(default=None, max_length=200,
                                      description="None: signs in with emailed links only.")
    full_name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=32)
    email_verified_at: datetime | None = utc_column(default=None, nullable=True)
    marketing_emails: bool = Field(default=False, description="Opted in to news and offers.")
    created_at: datetime = utc_column(default_factory=utcnow)
    updated_at: datetime = utc_column(default_factory=utcnow)
    last_sign_in_at: datetime | None = utc_column(default=None, nullable=True)
    password_changed_at: datetime | None = utc_column(default=None, nullable=True)
    deleted_at: datetime | None = utc_column(default=None, nullable=True,
                                             description="Erased: personal data removed.")


class CustomerAddress(SQLModel, table=True):
    __tablename__ = "customer_address"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: uuid.UUID = Field(foreign_key="customer.id", index=True)
    full_name: str = Field(max_length=200)
    phone: str = Field(max_length=32)
    address: str = Field(max_length=300)
    city: str = Field(max_length=120)
    postal_code: str = Field(max_length=20)
    country: str = Field(max_length=2)
    is_default: bool = False
    created_at: datetime = utc_column(default_factory=utcnow)


class LinkPurpose(StrEnum):
    SIGN_IN = "sign_in"
    RESET_PASSWORD = "reset_password"  # noqa: S105 (a purpose, not a secret)
    VERIFY_EMAIL = "verify_email"
    CHANGE_EMAIL = "change_email"


class CustomerLink(SQLModel, table=True):
    """A one-time link sent by email; only its SHA-256 is stored."""

    __tablename__ = "customer_link"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    customer_id: uuid.UUID = Field(foreign_key="customer.id", index=True)
    purpose: str = Field(max_length=20)
    created_at: datetime = utc_column(default_factory=utcnow)
    expires_at: datetime = utc_column()
    used_at: datetime | None = utc_column(default=None, nullable=True)
    new_email: str | None = Field(default=None, max_length=254,
                                  description="CHANGE_EMAIL links: the address to move to.")


class CustomerSignInAttempt(SQLModel, table=True):
    """Sign-in attempts, counted per address and per client IP to rate-limit guessing."""

    __tablename__ = "customer_sign_in_attempt"
    __table_args__ = (
        Index("ix_customer_sign_in_attempt_email_at", "email", "at"),
        Index("ix_customer_sign_in_attempt_ip_at", "client_ip", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    client_ip: str = Field(max_length=64)
    at: datetime = utc_column(default_factory=utcnow)
    succeeded: bool = False


class CustomerNote(SQLModel, table=True):
    """A staff note on a customer's file, which is keyed by email (guests have files too)."""

    __tablename__ = "customer_note"
    __table_args__ = (Index("ix_customer_note_email_lower", text("lower(email)")),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    author: str = Field(max_length=254)
    body: str = Field(sa_type=Text)
    created_at: datetime = utc_column(default_factory=utcnow)


class CustomerFileRef(SQLModel, table=True):
    """The opaque reference of a customer file, so that staff paths and the audit trail never
    hold an email: `g` + the first 32 hex digits of HMAC-SHA256(secret, lower-cased email).

    The HMAC cannot be reversed, nor computed by the database, so each reference handed out is
    remembered here with its email (lower-cased) to find the file again. Erasing a customer
    deletes their row (`email`), after which the reference leads nowhere.
    """

    __tablename__ = "customer_file_ref"

    ref: str = Field(primary_key=True, max_length=40)
    email: str = Field(max_length=254, unique=True, description="Lower-cased.")
    created_at: datetime = utc_column(default_factory=utcnow)
