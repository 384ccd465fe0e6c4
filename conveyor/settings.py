"""Configuration from environment variables; every field is documented in README.md.

Nothing here connects to anything: settings are plain values that `create_app(settings)`, the
database factory and the broker factory turn into connections when a process starts.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_STRIPE_API = "https://api.stripe.com"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    var_dir: Path = Field(default=Path("var"), description="Working data: SQLite, mail, media.")
    database_url: str = Field(default="", description="Default: SQLite file var/conveyor.db.")
    redis_url: str = "redis://127.0.0.1:6379/0"

    secret_key: SecretStr | None = Field(
        default=None, description="Signs session cookies; default: generated into var/."
    )
    base_url: str = "http://127.0.0.1:8000"
    storefront_host: str = "127.0.0.1"
    storefront_port: int = 8000
    admin_host: str = "127.0.0.1"
    admin_port: int = 8001
    admin_cors_origins: str = Field(default="", description="Comma-separated allowed origins.")
    admin_login_window_minutes: int = 15
    admin_login_failures_per_account: int = 5
    admin_login_failures_per_ip: int = 20

    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str = ""
    stripe_api_base: str = REAL_STRIPE_API
    stripe_js_url: str = "https://js.stripe.com/v3/"
    stripe_webhook_secret: SecretStr | None = None
    stripe_webhook_tolerance_seconds: int = 300
    localstripe_port: int = Field(default=8420, description="Where `conveyor run` starts it.")

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    mail_from: str = "Conveyor Shop <shop@conveyor.localhost>"

    review_deadline_hours: float = 24
    authorization_warning_hours: float = 48
    adjustment_approval_cents: int = Field(default=5000, ge=0, description=(
        "Adjustments worth more than this (units x unit cost) need a second person."))
    refund_approval_cents: int = Field(default=20_000, ge=0, description=(
        "Refunds above this need a second finance user's approval."))
    pick_wave_max_orders: int = Field(default=200, ge=1, le=5000)
    return_window_days: int = Field(default=30, ge=0, le=3650, description=(
        "Shipped items may be sent back for this many days after they left."))
    return_address: str = Field(
        default="Conveyor Shop Returns, Lagerstrasse 1, 10117 Berlin, Germany", description=(
            "Where customers send returns; shown in the return email and on the order page."))
    support_messages_per_order_per_hour: int = Field(default=5, ge=1, description=(
        "Messages a customer may send about one order per hour."))
    reservation_minutes: int = 15
    low_stock_threshold: int = 5
    max_line_quantity: int = 20
    payment_attempts_per_ip_per_hour: int = 20
    payment_attempts_per_email_per_hour: int = 8
    customer_sign_in_window_minutes: int = Field(default=15, ge=1, description=(
        "The window for counting failed customer sign-ins and emailed-link requests."))
    customer_sign_in_failures_per_email: int = Field(default=5, ge=1)
    customer_sign_in_failures_per_ip: int = Field(default=20, ge=1)
    customer_link_minutes: int = Field(default=30, ge=1, le=1440, description=(
        "How long an emailed sign-in, password-reset or verification link works."))

    worker_processes: int = 1
    worker_threads: int = 4
    worker_heartbeat_timeout_seconds: float = 15
    broker_maintenance_chance: int = Field(default=10_000, ge=0, le=1_000_000)
    relay_poll_seconds: float = 0.5
    expiry_interval_seconds: int = 30
    sync_payments_interval_seconds: int = 300
    stripe_sync_interval_seconds: int = Field(default=3600, ge=1, description=(
        "How often the relay has Stripe's balance transactions, payouts, charges and refunds "
        "copied for reconciliation."))

    catalogue_check_seconds: float = 1.0
    log_level: str = "INFO"

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'conveyor.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def mail_dir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def media_dir(self) -> Path:
        return self.var_dir / "media"

    @property
    def stripe_is_local(self) -> bool:
        """True when the Stripe API is a local stand-in (localstripe) rather than Stripe."""
        return self.stripe_api_base.rstrip("/") != REAL_STRIPE_API

    @property
    def stripe_js_origin(self) -> str:
        parts = urlsplit(self.stripe_js_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def stripe_api_origin(self) -> str:
        parts = urlsplit(self.stripe_api_base)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.admin_cors_origins.split(",") if o.strip()]

    @property
    def serves_https(self) -> bool:
        return self.base_url.startswith("https://")

    @cached_property
    def session_secret(self) -> str:
        """The configured SECRET_KEY, else one generated once and kept in var/secret_key."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.var_dir / "secret_key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
