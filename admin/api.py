"""The admin API's small framework: routes that declare who may call them and what they take.

Each route is registered with `api.route(...)`, naming its access (a `Permission`, or one of
PUBLIC, AUTHENTICATED, ENROLMENT), its query and body models and its response model. The same
pydantic models validate requests, serialise responses and produce the OpenAPI 3.1 document,
so the document cannot drift from what the code does.

Around every handler: the bearer token is checked (401, audited), then the permission (403,
audited); JSON is required for bodies (415); bad input gives 422 with field details; domain
errors map to one error shape; handlers run in a thread, as they use blocking services.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, get_type_hints

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import models_json_schema
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from admin.errors import ApiError, error_response, from_domain_error
from admin.identity import Principal, authenticate_bearer
from conveyor import audit
from conveyor.db import Database, UnitOfWork
from conveyor.errors import DomainError
from conveyor.settings import Settings
from models.staff import Permission

log = logging.getLogger("admin.api")

PUBLIC = "public"  # no token: login, the OpenAPI document
AUTHENTICATED = "authenticated"  # any valid token of a full session or API token
ENROLMENT = "enrolment"  # also the limited token of an admin who must enrol TOTP first
Access = Permission | str
SPECIAL_ACCESS = (PUBLIC, AUTHENTICATED, ENROLMENT)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY_BYTES = 1024 * 1024
DbId = Annotated[int, Field(ge=1, le=2_147_483_647)]  # an integer primary key in a path
MAX_CENTS = 2_147_483_647  # the largest amount an INTEGER column holds
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _utc_time(moment: datetime) -> datetime:
    """A time with an offset (whose midnight would a naive one be?) that the database can
    keep: one that still exists once moved to UTC."""
    if moment.tzinfo is None:
        raise ValueError("times need a UTC offset, e.g. 2026-11-23T00:00:00Z")
    if not _EARLIEST <= moment <= _LATEST:
        raise ValueError("times must lie between the years 1 and 9999 in UTC")
    return moment


UtcTime = Annotated[datetime, AfterValidator(_utc_time)]


class Schema(BaseModel):
    """Base for request models: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorBody


@dataclass
class Context:
    """What a handler gets besides its input: who calls, and the means to act."""

    request: Request
    principal: Principal | None
    actor: audit.Actor
    db: Database
    settings: Settings

    def unit_of_work(self) -> UnitOfWork:
        return self.db.unit_of_work()

    @property
    def staff(self) -> Principal:
        if self.principal is None:
            raise ApiError(401, "unauthenticated", "Sign in first.")
        return self.principal

    def require(self, permission: Permission) -> None:
        """A second permission some requests of a route need (e.g. CSV export); audited."""
        if self.staff.may(permission):
            return
        with self.unit_of_work() as uow:
            audit.record(uow.session, self.actor, "access.denied", outcome="denied",
                         target_type="route",
                         target_id=f"{self.request.method} {self.request.url.path}",
                         after={"needs": permission.value})
        raise ApiError(403, "forbidden", "Your role does not allow this.",
                       {"needs": permission.value})


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[..., Any]
    access: Access
    summary: str
    tags: list[str]
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status_code: int = 200
    errors: tuple[int, ...] = ()
    csv: bool = False
    path_params: dict[str, Any] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class Api:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    @classmethod
    def merge(cls, *apis: Api) -> Api:
        merged = cls()
        for api in apis:
            merged.endpoints.extend(api.endpoints)
        return merged

    def route(
        self, method: str, path: str, *, access: Access, summary: str, tags: list[str],
        query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None, status_code: int = 200,
        errors: tuple[int, ...] = (), csv: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not isinstance(access, Permission) and access not in SPECIAL_ACCESS:
            raise ValueError(f"{method} {path}: unknown access {access!r}")

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            hints = get_type_hints(handler, include_extras=True)
            params = {
                name: hints.get(name, str)
                for name in inspect.signature(handler).parameters
                if name not in ("ctx", "query", "body")
            }
            self.endpoints.append(Endpoint(
                method=method.upper(), path=path, handler=handler, access=access,
                summary=summary, tags=tags, query=query, body=body, response=response,
                status_code=status_code, errors=errors, csv=csv, path_params=params,
            ))
            return handler

        return register

    def routes(self) -> list[Route]:
        by_path: dict[str, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            by_path.setdefault(endpoint.path, []).append(endpoint)
        return [Route(path, _dispatcher(endpoints), methods=[e.method for e in endpoints])
                for path, endpoints in by_path.items()]


def _dispatcher(endpoints: list[Endpoint]) -> Callable[[Request], Any]:
    by_method = {e.method: e for e in endpoints}

    async def dispatch(request: Request) -> Response:
        endpoint = by_method[request.method if request.method != "HEAD" else "GET"]
        return await _handle(endpoint, request)

    dispatch.endpoints = endpoints  # type: ignore[attr-defined]
    return dispatch


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def client_ip_of(request: Request) -> str:
    return request.client.host if request.client else ""


async def _handle(endpoint: Endpoint, request: Request) -> Response:
    app_state = request.app.state
    db: Database = app_state.db
    settings: Settings = app_state.settings
    actor = audit.Actor(request_id=request_id_of(request), client_ip=client_ip_of(request))
    principal: Principal | None = None
    try:
        if endpoint.access != PUBLIC:
            principal = await run_in_threadpool(
                _authorise, db, settings, request, endpoint, actor)
            actor = principal.actor(actor.request_id, actor.client_ip)
        kwargs = await _parse(endpoint, request)
        ctx = Context(request, principal, actor, db, settings)
        result = await run_in_threadpool(endpoint.handler, ctx, **kwargs)
    except ApiError as exc:
        return error_response(exc)
    except IntegrityError:
        # The checks in services came first; this is two requests racing for one unique value.
        return error_response(ApiError(409, "conflict", "This conflicts with data written "
                                       "just now by another request; reload and try again."))
    except DomainError as exc:
        return error_response(from_domain_error(exc))
    if isinstance(result, Response):
        return result
    if isinstance(result, BaseModel):
        return JSONResponse(result.model_dump(mode="json"), status_code=endpoint.status_code)
    return JSONResponse(result, status_code=endpoint.status_code)


def _authorise(
    db: Database, settings: Settings, request: Request, endpoint: Endpoint, actor: audit.Actor,
) -> Principal:
    """The caller's principal, or ApiError 401/403; refusals are written to the audit trail."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    with db.unit_of_work() as uow:
        principal = (authenticate_bearer(uow.session, token.strip(), settings=settings)
                     if scheme.lower() == "bearer" and token.strip() else None)
        if principal is None:
            audit.record(uow.session, actor, "access.unauthenticated", outcome="denied",
                         target_type="route", target_id=f"{endpoint.method} {endpoint.path}")
            denied = ApiError(401, "unauthenticated",
                              "A valid bearer token is required: POST /api/auth/login.")
        elif not principal.may(endpoint.access):
            audit.record(uow.session, principal.actor(actor.request_id, actor.client_ip),
                         "access.denied", outcome="denied", target_type="route",
                         target_id=f"{endpoint.method} {endpoint.path}",
                         after={"needs": str(endpoint.access)})
            denied = ApiError(403, "forbidden",
                              "Your role does not allow this.", {"needs": str(endpoint.access)})
        else:
            return principal
    if denied.status == 401:
        denied.headers["WWW-Authenticate"] = 'Bearer realm="conveyor-admin"'
    raise denied


NUL_MARKERS = (b"\x00", b"%00", b"\\u0000")


def _refuse_nul(raw: bytes, where: str) -> None:
    """Text columns cannot hold NUL bytes; refuse them at the door instead of failing later."""
    if any(marker in raw for marker in NUL_MARKERS):
        raise ApiError(422, "invalid_input", "Text must not contain NUL characters.",
                       {"fields": [{"loc": [where], "message": "contains a NUL character",
                                    "type": "nul_character"}]})


async def _parse(endpoint: Endpoint, request: Request) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    _refuse_nul(request.scope.get("query_string", b""), "query")
    _refuse_nul(request.scope.get("path", "").encode("utf-8", "surrogateescape"), "path")
    for name, annotation in endpoint.path_params.items():
        try:
            kwargs[name] = TypeAdapter(annotation).validate_python(request.path_params[name])
        except ValidationError:
            raise ApiError(404, "not_found", f"No such {name.removesuffix('_id')}.") from None
    if endpoint.query is not None:
        kwargs["query"] = _validate(endpoint.query, _query_dict(endpoint.query, request))
    body = await request.body() if endpoint.method in WRITE_METHODS else b""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", "The request body is too large.")
    _refuse_nul(body, "body")
    if body.strip():
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "Send JSON: Content-Type: "
                           "application/json.")
    if endpoint.body is not None:
        if not body.strip():
            raise ApiError(422, "invalid_input", "A JSON body is required.",
                           {"fields": [{"loc": ["body"], "message": "Field required",
                                        "type": "missing"}]})
        try:
            json.loads(body)
        except ValueError:
            raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
        kwargs["body"] = _validate(endpoint.body, body, json_text=True)
    return kwargs


def _query_dict(model: type[BaseModel], request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in request.query_params:
        field_info = model.model_fields.get(key)
        many = field_info is not None and _is_list(field_info.annotation)
        values[key] = request.query_params.getlist(key) if many else request.query_params[key]
    return values


def _is_list(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    if origin is list:
        return True
    return any(getattr(arg, "__origin__", None) is list
               for arg in getattr(annotation, "__args__", ()))


def _validate(model: type[BaseModel], data: Any, *, json_text: bool = False) -> BaseModel:
    try:
        if json_text:
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [{"loc": [str(p) for p in error["loc"]], "message": error["msg"],
                   "type": error["type"]} for error in exc.errors()]
        raise ApiError(422, "invalid_input", "Some fields are not valid.",
                       {"fields": fields}) from None


# -- OpenAPI ------------------------------------------------------------------------------------

ERROR_TEXT = {
    400: "Malformed request", 401: "No valid bearer token", 403: "The role does not allow it",
    404: "Not found", 409: "Conflicts with the current state", 413: "Body too large",
    415: "Not JSON", 422: "Invalid input, with field details", 429: "Too many attempts",
}


def openapi_document(api: Api, *, title: str, version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for e in api.endpoints:
        models += [(m, "validation") for m in (e.query, e.body) if m is not None]
        if e.response is not None:
            models.append((e.response, "serialization"))
    keys, top = models_json_schema(list(dict.fromkeys(models)),
                                   ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for e in api.endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, keys, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Conveyor's back office: staff, orders, catalogue, audit."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Token from POST /api/auth/login"}},
        },
    }


def _ref(keys: dict[Any, Any], model: type[BaseModel], mode: str) -> dict[str, Any]:
    return dict(keys[(model, mode)])


def _operation(e: Endpoint, keys: dict[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": TypeAdapter(annotation).json_schema()}
        for name, annotation in e.path_params.items()
    ]
    if e.query is not None:
        query_schema = schemas[_ref(keys, e.query, "validation")["$ref"].rsplit("/", 1)[1]]
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required,
                               "schema": prop, "style": "form", "explode": True})
    errors = set(e.errors) | {500}
    if e.access != PUBLIC:
        errors |= {401, 403}
    if e.path_params:
        errors.add(404)
    if e.query is not None:
        errors.add(422)
    if e.method in WRITE_METHODS:
        errors |= {400, 413, 415, 422}
    errors.discard(500)
    error_ref = _ref(keys, ErrorResponse, "serialization")
    responses: dict[str, Any] = {}
    if e.csv:
        responses[str(e.status_code)] = {
            "description": "OK",
            "content": {"application/json": {"schema": _ref(keys, e.response, "serialization")}
                        if e.response else {},
                        "text/csv": {"schema": {"type": "string"}}},
        }
    elif e.response is not None:
        responses[str(e.status_code)] = {
            "description": "OK",
            "content": {"application/json": {"schema": _ref(keys, e.response, "serialization")}},
        }
    else:
        responses[str(e.status_code)] = {"description": "Done"}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERROR_TEXT.get(status, "Error"),
                                  "content": {"application/json": {"schema": error_ref}}}
    operation: dict[str, Any] = {
        "operationId": e.operation_id, "summary": e.summary, "tags": e.tags,
        "parameters": parameters, "responses": responses,
        "x-conveyor-access": str(e.access),
    }
    if e.access != PUBLIC:
        operation["security"] = [{"bearer": []}]
    if e.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(keys, e.body, "validation")}},
        }
    return operation


def new_request_id() -> str:
    return uuid.uuid4().hex
