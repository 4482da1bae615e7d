"""Admin tokens: HS256 JWTs shaped like ThingsBoard's, and their signing key.

An access token carries `sub` (the admin's email), `userId`, `scopes` ([authority]),
`firstName`, `lastName`, `enabled`, `isPublic`, `iss`, `iat`, `exp`; a refresh token
carries `scopes: ["REFRESH_TOKEN"]`. The key is JWT_TOKEN_SIGNING_KEY, or a random key
kept in the security database so tokens survive a restart.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from pytbmq.storage.security import AdminUser

REFRESH_SCOPE = "REFRESH_TOKEN"
ALGORITHM = "HS256"


class TokenError(Exception):
    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Claims:
    user_id: str
    email: str
    authority: str


class TokenService:
    def __init__(self, key: bytes, issuer: str, ttl: int, refresh_ttl: int) -> None:
        self._key = key
        self.issuer = issuer
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl

    def issue(self, user: AdminUser) -> dict[str, str]:
        now = int(time.time())
        access = {
            "sub": user.email,
            "userId": user.id,
            "scopes": [user.authority],
            "firstName": user.first_name,
            "lastName": user.last_name,
            "enabled": True,
            "isPublic": False,
            "iss": self.issuer,
            "iat": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        refresh = {
            "sub": user.email,
            "userId": user.id,
            "scopes": [REFRESH_SCOPE],
            "iss": self.issuer,
            "iat": now,
            "exp": now + self.refresh_ttl,
            "jti": uuid.uuid4().hex,
        }
        return {
            "token": jwt.encode(access, self._key, ALGORITHM),
            "refreshToken": jwt.encode(refresh, self._key, ALGORITHM),
        }

    def verify(self, token: str, *, refresh: bool = False) -> Claims:
        try:
            data: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired", expired=True) from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        scopes = data.get("scopes")
        if not isinstance(scopes, list) or len(scopes) != 1 or not isinstance(scopes[0], str):
            raise TokenError("invalid token: no scope")
        is_refresh = scopes[0] == REFRESH_SCOPE
        if is_refresh != refresh:
            raise TokenError(
                "a refresh token is not an access token" if is_refresh else "not a refresh token"
            )
        user_id = data.get("userId")
        if not isinstance(user_id, str):
            raise TokenError("invalid token: no userId")
        return Claims(user_id, str(data["sub"]), scopes[0])
