"""Endpoint URLs: credentials in them are refused, and messages show them without user info or query."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_QUERY = re.compile(r"key|token|secret|password|passwd|auth|sig", re.IGNORECASE)


def url_credentials(url: str) -> str | None:
    """What in `url` looks like a credential (`user:password@` or a `?key=` query), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username or parts.password:
        return "a user name or password before the host"
    for pair in parts.query.split("&"):
        name = pair.partition("=")[0]
        if name and _SECRET_QUERY.search(name):
            return f"a {name!r} query parameter"
    return None


def display_url(url: str) -> str:
    """`url` without user info or query string, safe to show in messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparsable url>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def endpoint(base_url: str, path: str) -> str:
    """`path` appended to the path of `base_url`; a query string (`?api-version=...`) stays at the end."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))
