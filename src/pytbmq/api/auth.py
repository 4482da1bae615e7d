"""Admin users and their tokens: `/api/auth/*` and the `viewer` / `admin` dependencies.

TBMQ's login flow: `POST /api/auth/login {"username", "password"}` → `{token,
refreshToken}`; requests carry `X-Authorization: Bearer <token>` (or `Authorization:
Bearer`); `POST /api/auth/token {"refreshToken"}` → a new pair; `GET /api/auth/user`;
`POST /api/auth/changePassword {"currentPassword", "newPassword"}`. Every other endpoint
depends on `viewer` (any admin, read-only endpoints) or `admin` (authority SYS_ADMIN:
changes). A SYS_VIEWER admin (a pytbmq addition) gets 403 on changes. `POST /api/admin`
creates admins, `GET /api/admin` lists them, `DELETE /api/admin/{id}` removes one.

On first start, when there is no admin yet, `create_first_admin` creates one named
SECURITY_ADMIN_USERNAME with SECURITY_ADMIN_PASSWORD or, when that is empty, a random
password written once to the log. Passwords are stored as scrypt hashes only.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, Field

from pytbmq.api.context import ApiContext, get_ctx
from pytbmq.api.errors import JWT_TOKEN_EXPIRED, ApiError, bad_request, not_found
from pytbmq.api.paging import PageParams, page_params, paginate
from pytbmq.api.tokens import Claims, TokenError
from pytbmq.auth.credentials import hash_password, verify_password
from pytbmq.security import Security
from pytbmq.storage.security import AdminUser

log = logging.getLogger(__name__)

SYS_ADMIN = "SYS_ADMIN"
SYS_VIEWER = "SYS_VIEWER"
AUTHORITIES = (SYS_ADMIN, SYS_VIEWER)
MIN_PASSWORD_LENGTH = 8

router = APIRouter(tags=["auth"])


# ------------------------------------------------------------------ dependencies
def _bearer(x_authorization: str | None, authorization: str | None) -> str:
    for header in (x_authorization, authorization):
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise ApiError(401, "Authentication failed: no bearer token (X-Authorization header)")


async def viewer(
    ctx: Annotated[ApiContext, Depends(get_ctx)],
    x_authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Claims:
    """Any signed-in admin (read-only endpoints)."""
    token = _bearer(x_authorization, authorization)
    try:
        claims = ctx.tokens.verify(token)
    except TokenError as exc:
        raise ApiError(401, str(exc), JWT_TOKEN_EXPIRED if exc.expired else None) from None
    user = await ctx.security.read_db(lambda db: db.get_admin_user(user_id=claims.user_id))
    if user is None:
        raise ApiError(401, "Authentication failed: the admin user no longer exists")
    return Claims(user.id, user.email, user.authority)


async def admin(claims: Annotated[Claims, Depends(viewer)]) -> Claims:
    """An admin with authority SYS_ADMIN (endpoints that change something)."""
    if claims.authority != SYS_ADMIN:
        raise ApiError(
            403, f"You don't have permission to perform this operation ({claims.authority})"
        )
    return claims


Viewer = Annotated[Claims, Depends(viewer)]
Admin = Annotated[Claims, Depends(admin)]
Ctx = Annotated[ApiContext, Depends(get_ctx)]


# ------------------------------------------------------------------ first admin
async def create_first_admin(security: Security, username: str, password: str) -> None:
    users = await security.read_db(lambda db: db.list_admin_users())
    if users:
        return
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    hashed = await security.run_hash(lambda: hash_password(password))
    await security.run_db(lambda db: db.add_admin_user(username, hashed, SYS_ADMIN))
    if generated:
        log.warning(
            "created the first admin user %r with the generated password %s (shown once; "
            "change it with POST /api/auth/changePassword)",
            username,
            password,
        )
    else:
        log.info(
            "created the first admin user %r (password from SECURITY_ADMIN_PASSWORD)", username
        )


# ------------------------------------------------------------------ models
class LoginRequest(BaseModel):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class RefreshRequest(BaseModel):
    refreshToken: str = Field(min_length=1)


class ChangePasswordRequest(BaseModel):
    currentPassword: str = Field(min_length=1)
    newPassword: str = Field(min_length=MIN_PASSWORD_LENGTH)


class TokenPair(BaseModel):
    token: str
    refreshToken: str


class AdminUserIn(BaseModel):
    email: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH)
    authority: str = SYS_ADMIN
    firstName: str | None = None
    lastName: str | None = None


def user_document(user: AdminUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "authority": user.authority,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "createdTime": user.created_time,
        "additionalInfo": {},
    }


# ------------------------------------------------------------------ endpoints
@router.post("/api/auth/login", response_model=TokenPair, summary="Sign in as an admin")
async def login(body: LoginRequest, ctx: Ctx) -> dict[str, str]:
    user = await ctx.security.read_db(lambda db: db.get_admin_user(email=body.username))
    if user is None:
        # hash anyway so that unknown and known users take the same time
        await ctx.security.run_hash(lambda: hash_password(body.password))
        raise ApiError(401, "Authentication failed: invalid username or password")
    check = await ctx.security.run_hash(lambda: verify_password(user.password_hash, body.password))
    if not check.ok:
        raise ApiError(401, "Authentication failed: invalid username or password")
    return ctx.tokens.issue(user)


@router.post("/api/auth/token", response_model=TokenPair, summary="Refresh the token pair")
async def refresh(body: RefreshRequest, ctx: Ctx) -> dict[str, str]:
    try:
        claims = ctx.tokens.verify(body.refreshToken, refresh=True)
    except TokenError as exc:
        raise ApiError(401, str(exc), JWT_TOKEN_EXPIRED if exc.expired else None) from None
    user = await ctx.security.read_db(lambda db: db.get_admin_user(user_id=claims.user_id))
    if user is None:
        raise ApiError(401, "Authentication failed: the admin user no longer exists")
    return ctx.tokens.issue(user)


@router.get("/api/auth/user", summary="The signed-in admin")
async def current_user(claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    user = await ctx.security.read_db(lambda db: db.get_admin_user(user_id=claims.user_id))
    if user is None:
        raise not_found("admin user not found")
    return user_document(user)


@router.post("/api/auth/changePassword", summary="Change the signed-in admin's password")
async def change_password(body: ChangePasswordRequest, claims: Viewer, ctx: Ctx) -> dict[str, str]:
    user = await ctx.security.read_db(lambda db: db.get_admin_user(user_id=claims.user_id))
    if user is None:
        raise not_found("admin user not found")
    check = await ctx.security.run_hash(
        lambda: verify_password(user.password_hash, body.currentPassword)
    )
    if not check.ok:
        raise bad_request("currentPassword: does not match")
    hashed = await ctx.security.run_hash(lambda: hash_password(body.newPassword))
    await ctx.security.run_db(lambda db: db.set_admin_password(user.id, hashed))
    return ctx.tokens.issue(user)


@router.post("/api/admin", summary="Create an admin user")
async def create_admin(body: AdminUserIn, _claims: Admin, ctx: Ctx) -> dict[str, Any]:
    if body.authority not in AUTHORITIES:
        raise bad_request(f"authority: must be one of {', '.join(AUTHORITIES)}")
    hashed = await ctx.security.run_hash(lambda: hash_password(body.password))
    try:
        user = await ctx.security.run_db(
            lambda db: db.add_admin_user(
                body.email, hashed, body.authority, body.firstName, body.lastName
            )
        )
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return user_document(user)


@router.get("/api/admin", summary="Admin users, a page at a time")
async def list_admins(
    _claims: Viewer, ctx: Ctx, params: Annotated[PageParams, Depends(page_params)]
) -> dict[str, Any]:
    users = await ctx.security.read_db(lambda db: db.list_admin_users())
    return paginate(
        users,
        params,
        search=lambda u: u.email,
        sort_keys={"email": lambda u: u.email, "createdTime": lambda u: u.created_time},
        render=user_document,
    )


@router.get("/api/admin/user/{user_id}", summary="One admin user")
async def get_admin(user_id: str, _claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    user = await ctx.security.read_db(lambda db: db.get_admin_user(user_id=user_id))
    if user is None:
        raise not_found(f"admin user {user_id!r} not found")
    return user_document(user)


@router.delete("/api/admin/{user_id}", summary="Remove an admin user")
async def delete_admin(user_id: str, claims: Admin, ctx: Ctx) -> None:
    if user_id == claims.user_id:
        raise bad_request("id: an admin cannot remove itself")
    if not await ctx.security.run_db(lambda db: db.remove_admin_user(user_id)):
        raise not_found(f"admin user {user_id!r} not found")
