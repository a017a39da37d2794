"""Who may use the server: nobody needs anything on loopback; elsewhere, a token on every request.

    access = Access.for_host("0.0.0.0")                  # tokens generated: operator and view-only
    access = Access(operator_token="s3cret", view_token="look")
    app.add_middleware(RequireToken, access=access)
    access.link("http://host:8000/", "viewer")          # the URL that carries the view-only token

Bound to loopback (127.0.0.1, ::1, localhost), only this machine can reach the server and
`Access.open()` lets every request through as the operator. Bound to any other address,
`Access.for_host` makes two tokens (or takes the given ones): the operator's, which may start
and stop training, and a view-only one, which may watch and draw. `RequireToken` (ASGI
middleware, the outermost layer) checks every request (page, static files, API, events,
/docs): the token comes as `Authorization: Bearer TOKEN`, as `?token=TOKEN` (the printed
links) or in the cookie the page sets when such a link is opened, so that its scripts,
pictures and event stream carry it. A request without a token gets 401, one with a wrong
token 403, and nothing else. Tokens are compared with `hmac.compare_digest` (constant time).

Each request's role ("operator" or "viewer") is left in `scope["digitlab.role"]`; the routes
that change something ask for `require_operator`, which also refuses cross-site requests (an
`Origin` that is not the server's own), so that a web page elsewhere cannot start a training
through a visitor's browser.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import re
import secrets
import urllib.parse
from http import cookies

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from digitlab import errors

ROLE_KEY = "digitlab.role"
COOKIE = "digitlab_token"
OPERATOR, VIEWER, STUDENT = "operator", "viewer", "student"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,200}")


def is_loopback(host: str) -> bool:
    """True when `host` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Access:
    """The server's tokens; both None means open (loopback)."""

    operator_token: str | None = None
    view_token: str | None = None
    # A class (serve/classroom.py): students send their runs with this token; None when there is no class.
    student_token: str | None = None

    @classmethod
    def for_host(cls, host: str, operator_token: str | None = None, view_token: str | None = None) -> Access:
        """Open on loopback unless tokens are given; elsewhere both tokens, generated where not given."""
        if is_loopback(host) and operator_token is None and view_token is None:
            return cls()
        for flag, token in (("--token", operator_token), ("--view-token", view_token)):
            if token is not None and not _TOKEN.fullmatch(token):
                raise errors.DigitlabError(
                    f"{flag} must be 16 to 200 letters, digits, '-' or '_' (it travels in links and a cookie); "
                    "leave it out to have one generated."
                )
        operator_token = operator_token or secrets.token_urlsafe(18)
        view_token = view_token or secrets.token_urlsafe(18)
        if operator_token == view_token:
            raise errors.DigitlabError("--token and --view-token must differ: one starts training, one only watches.")
        return cls(operator_token, view_token)

    def with_students(self) -> Access:
        """The same tokens and a students' one (generated), for a class; unchanged when open (loopback)."""
        if self.open or self.student_token is not None:
            return self
        return dataclasses.replace(self, student_token=secrets.token_urlsafe(18))

    @property
    def open(self) -> bool:
        """Whether requests need no token (no operator token was made): every request is the operator's."""
        return self.operator_token is None

    def role(self, token: str | None) -> str | None:
        """ "operator", "viewer", or None for a token that is neither (compared in constant time)."""
        if self.open:
            return OPERATOR
        presented = (token or "").encode()
        # Both comparisons always run, so the time taken says nothing about which one matched.
        is_operator = hmac.compare_digest(presented, (self.operator_token or "").encode())
        is_viewer = hmac.compare_digest(presented, (self.view_token or "").encode())
        is_student = self.student_token is not None and hmac.compare_digest(presented, self.student_token.encode())
        if is_operator:
            return OPERATOR
        if is_student:
            return STUDENT
        return VIEWER if is_viewer else None

    def link(self, base_url: str, role: str = OPERATOR) -> str:
        """`base_url` carrying the role's token (unchanged when the server is open)."""
        token = {OPERATOR: self.operator_token, STUDENT: self.student_token}.get(role, self.view_token)
        return base_url if token is None else f"{base_url}?token={urllib.parse.quote(token)}"


def _presented_token(scope) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came in the query string (a link just opened)."""
    headers = dict(scope["headers"])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip(), False
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0], True
    jar = cookies.SimpleCookie()
    try:
        jar.load(headers.get(b"cookie", b"").decode("latin-1"))
    except cookies.CookieError:
        return None, False
    return (jar[COOKIE].value, False) if COOKIE in jar else (None, False)


class RequireToken:
    """ASGI middleware: lets a request through only with one of the server's tokens (see the module)."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.access.open:
            scope[ROLE_KEY] = OPERATOR
            await self.app(scope, receive, send)
            return
        token, from_link = _presented_token(scope)
        role = self.access.role(token) if token else None
        if role is None:
            if token:
                status, detail = 403, "This token is not this server's. Open the link `digitlab serve` printed."
            else:
                status, detail = (
                    401,
                    "This server needs its token: open the link `digitlab serve` printed (it ends in ?token=...), "
                    "or send the header Authorization: Bearer TOKEN.",
                )
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
            return
        scope[ROLE_KEY] = role

        async def send_with_cookie(message):
            if from_link and message["type"] == "http.response.start":
                # The page's scripts, pictures and event stream then carry the token without it in every URL.
                value = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def role_of(request: Request) -> str:
    """The role (`OPERATOR`, `VIEWER` or `STUDENT`) that `RequireToken` gave this request's token."""
    return request.scope.get(ROLE_KEY, VIEWER)


def require_operator(request: Request) -> None:
    """A FastAPI dependency for the routes that start or stop training: the operator only, same site only."""
    if role_of(request) != OPERATOR:
        raise HTTPException(
            403,
            "This link is view-only: it can watch and draw, not start or stop training. Ask for the operator's link.",
        )
    origin = request.headers.get("origin")
    if origin is not None and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"A request from another site ({origin}) may not start or stop training here.")
