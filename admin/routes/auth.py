"""Login, logout, who am I, and TOTP enrolment."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from admin import identity
from admin.api import ENROLMENT, PUBLIC, Api, Context, Schema
from admin.errors import ApiError

api = Api()
TAGS = ["auth"]


class LoginRequest(Schema):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, pattern=r"^\d{6}$")


class LoginResponse(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105
    expires_at: datetime
    idle_timeout_seconds: int
    roles: list[str]
    totp_enrolment_required: bool


class Me(BaseModel):
    email: str
    roles: list[str]
    permissions: list[str]
    token_kind: str
    token_expires_at: datetime


class TotpEnrolment(BaseModel):
    secret: str
    provisioning_uri: str


class TotpConfirm(Schema):
    code: str = Field(pattern=r"^\d{6}$")


class Done(BaseModel):
    ok: bool = True


@api.route("POST", "/api/auth/login", access=PUBLIC, body=LoginRequest,
           response=LoginResponse, summary="Exchange email and password (and TOTP code) for a "
           "bearer token", tags=TAGS, errors=(401, 429))
def login(ctx: Context, body: LoginRequest) -> LoginResponse:
    with ctx.unit_of_work() as uow:
        result = identity.login(uow=uow, email=body.email, password=body.password,
                                totp_code=body.totp_code, settings=ctx.settings,
                                actor=ctx.actor)
    if not result.ok:
        if result.code == "rate_limited":
            raise ApiError(429, result.code, result.message,
                           {"retry_after": result.retry_after},
                           {"Retry-After": str(result.retry_after)})
        raise ApiError(401, result.code, result.message)
    assert result.expires_at is not None
    return LoginResponse(token=result.token, expires_at=result.expires_at,
                         idle_timeout_seconds=int(identity.SESSION_IDLE.total_seconds()),
                         roles=list(result.roles),
                         totp_enrolment_required=result.totp_enrolment_required)


@api.route("POST", "/api/auth/logout", access=ENROLMENT, response=Done,
           summary="Revoke the token used for this call, at once", tags=TAGS)
def logout(ctx: Context) -> Done:
    with ctx.unit_of_work() as uow:
        identity.logout(uow=uow, principal=ctx.staff, actor=ctx.actor)
    return Done()


@api.route("GET", "/api/auth/me", access=ENROLMENT, response=Me,
           summary="Who the token belongs to and what it may do", tags=TAGS)
def me(ctx: Context) -> Me:
    staff = ctx.staff
    return Me(email=staff.email, roles=list(staff.roles),
              permissions=sorted(p.value for p in staff.permissions),
              token_kind=staff.token_kind, token_expires_at=staff.expires_at)


@api.route("POST", "/api/auth/totp/enrol", access=ENROLMENT, response=TotpEnrolment,
           summary="Start TOTP enrolment: a secret and a provisioning URI for an "
           "authenticator app", tags=TAGS, errors=(409,))
def totp_enrol(ctx: Context) -> TotpEnrolment:
    with ctx.unit_of_work() as uow:
        secret, uri = identity.enrol_totp(uow=uow, principal=ctx.staff, actor=ctx.actor)
    return TotpEnrolment(secret=secret, provisioning_uri=uri)


@api.route("POST", "/api/auth/totp/confirm", access=ENROLMENT, body=TotpConfirm,
           response=Done, summary="Finish TOTP enrolment with a current code; then log in "
           "again with a code", tags=TAGS, errors=(409,))
def totp_confirm(ctx: Context, body: TotpConfirm) -> Done:
    with ctx.unit_of_work() as uow:
        identity.confirm_totp(uow=uow, principal=ctx.staff, code=body.code, actor=ctx.actor)
    return Done()

