"""The admin REST API, metrics and health: TBMQ's endpoints on FastAPI/uvicorn.

Runs in the broker's process and event loop (`server.ApiServer`, started by
pytbmq.broker), so handlers read and change the live broker directly: the router, the
links and the security state. `app.create_app` builds the application; `auth` holds the
admin users, JWT tokens and the `/api/auth/*` endpoints; `paging` TBMQ's page links;
the other modules are one router per area of TBMQ's API.
"""
