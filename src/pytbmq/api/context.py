"""What the API's handlers reach: the live broker and the admin-token service.

`ApiContext` is stored on the FastAPI app (`app.state.ctx`); handlers get it with the
`get_ctx` dependency. Everything here runs on the broker's event loop; database work goes
through `Security.run_db` (one database thread) and password hashing through
`Security.run_hash`, never blocking the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from fastapi import Request

if TYPE_CHECKING:
    from pytbmq.api.tokens import TokenService
    from pytbmq.broker import Broker
    from pytbmq.config import Settings
    from pytbmq.router import Router
    from pytbmq.security import Security


@dataclass
class ApiContext:
    broker: Broker
    tokens: TokenService
    started_at: float = field(default_factory=time.time)

    @property
    def settings(self) -> Settings:
        return self.broker.settings

    @property
    def router(self) -> Router:
        return self.broker.router

    @property
    def security(self) -> Security:
        return self.broker.security


def get_ctx(request: Request) -> ApiContext:
    """FastAPI dependency: the context of the app serving this request."""
    return cast(ApiContext, request.app.state.ctx)
