"""Sign-in and OAuth tokens, as Panoptes hands them out (the sandbox accepts any credentials)."""

from __future__ import annotations

import secrets
from typing import TypedDict

from .store import Store
from .wire import Request, Response, json_response


class TokenInfo(TypedDict):
    user_id: int | None
    refresh_token: str


class Auth:
    """Sign-in and OAuth as Panoptes does them; any login and password are accepted."""

    def __init__(self, store: Store, token_ttl_s: int = 7200) -> None:
        self.store = store
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, TokenInfo] = {}
        self.sessions: dict[str, int] = {}
        self.csrf: set[str] = set()

    def sign_in(self, req: Request) -> Response:
        data = req.json()
        user = data.get("user") if isinstance(data, dict) else None
        if data.get("authenticity_token") not in self.csrf:
            # Rails refuses a sign-in whose token it did not hand out with GET /users/sign_in.
            return json_response(422, {"error": "Can't verify CSRF token authenticity."})
        if not isinstance(user, dict) or not user.get("login") or not user.get("password"):
            return json_response(401, {"error": "Invalid login or password."})
        record = self.store.user_for_login(str(user["login"]))
        session = secrets.token_urlsafe(24)
        self.sessions[session] = record.id
        self.store.save()
        body = {
            "users": [
                {"id": str(record.id), "login": record.login, "display_name": record.display_name}
            ]
        }
        return json_response(
            200, body, {"Set-Cookie": f"_sandbox_session={session}; Path=/; HttpOnly"}
        )

    def token(self, req: Request) -> Response:
        form = req.form()
        grant = form.get("grant_type", "")
        user_id: int | None = None
        if grant == "password":
            session = req.cookie("_sandbox_session")
            if session not in self.sessions:
                return json_response(
                    401, {"error": "invalid_grant", "error_description": "sign in first"}
                )
            user_id = self.sessions[session]
        elif grant == "refresh_token":
            old = next(
                (
                    t
                    for t, info in self.tokens.items()
                    if info["refresh_token"] == form.get("refresh_token")
                ),
                None,
            )
            if old is None:
                return json_response(
                    401, {"error": "invalid_grant", "error_description": "unknown refresh token"}
                )
            user_id = self.tokens.pop(old)["user_id"]
        elif grant != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        self.tokens[token] = {"user_id": user_id, "refresh_token": refresh}
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_ttl_s,
                "refresh_token": refresh,
                "scope": "public project",
                "created_at": int(self.store.clock().timestamp()),
            },
        )
