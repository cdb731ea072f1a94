"""HTTP hardening of the service: hostile requests get a bounded 4xx, never a 5xx or an echo of themselves.

`install(app, cfg)` (called by `api.app.create_app`) adds:
- `BodyLimit`, an ASGI middleware: a body larger than `limits.max_body_bytes` is answered 413 without being
  read past the limit (by its Content-Length at once, or when the streamed bytes pass it);
- error handlers for request validation (422) and undecodable JSON: each error keeps its type, location and
  message, and the offending input only as a short excerpt (`EXCERPT_CHARS`); every error body is a
  `SafeJSONResponse`: strings made encodable (a lone surrogate becomes U+FFFD) and without host paths
  (`redact_paths`: `/tmp/x/runs` -> `.../runs`), NaN/Infinity quoted as text, and a fixed JSON body should
  rendering still fail, so no error response can fail to encode or name a host folder;
- the OpenAPI schema built from the configuration: `n` at most `limits.n_max`, the question, evidence and
  SQL lengths of the configured limits, `deadline_s` at most `limits.max_deadline_s`, `pair` one of the
  configured pairs, the checkpoint names of PUT /generators|discriminators/active the configured ones, and
  feedback needing `correct` or `corrected_sql`; the API-key security schemes only when a key is configured.
Strings that cannot be encoded (lone surrogates) are refused by the request models (`api.schemas`) with 422.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

EXCERPT_CHARS = 80
log = logging.getLogger("api.app")

# First segments of the service's own routes: never mistaken for a host folder in an error message.
_API_SEGMENTS = frozenset({"plan", "plans", "check", "feedback", "databases", "generators", "discriminators", "ranker",
                           "health", "livez", "readyz", "metrics", "ui", "docs", "redoc", "openapi.json"})
# Top-level folders of common hosts, whether or not this one has them (plus this host's own, see `_path_re`).
_HOST_ROOTS = ("home", "root", "tmp", "var", "usr", "etc", "opt", "srv", "mnt", "media", "run", "proc", "sys", "dev",
               "work", "data", "workspace", "app", "nix", "private", "Users", "Volumes", "Library", "System")
_PATH_END = ".,:;!?"  # punctuation after a path belongs to the sentence, not the path


@functools.cache
def _path_re() -> re.Pattern[str]:
    try:
        local = [n for n in os.listdir("/") if n and not n.startswith(".")]
    except OSError:
        local = []
    roots = sorted((set(_HOST_ROOTS) | set(local)) - _API_SEGMENTS, key=len, reverse=True)
    alt = "|".join(re.escape(r) for r in roots)
    # an absolute POSIX path under a host folder (also after `file://` or `sqlite:///`), or a Windows drive path
    return re.compile(rf"(?<![\w.~-])/+(?:{alt})(?=[/\s'\"`,;:)\]}}>]|$)[^\s'\"`,;)\]}}>]*"
                      r"|(?<![\w])[A-Za-z]:\\[^\s'\"`,;)\]}>]*")


def _hide_path(m: re.Match[str]) -> str:
    text = m.group(0)
    path = text.rstrip(_PATH_END)
    tail = text[len(path):]
    parts = [p for p in re.split(r"[/\\]+", path) if p]
    # keep the file's own name when there is one below a host folder's first level (`/tmp/x/results.jsonl` ->
    # `.../results.jsonl`); never a user's home folder itself (`/home/alice` -> `...`)
    return ("..." + (f"/{parts[-1]}" if len(parts) > 2 else "")) + tail


def redact_paths(s: str) -> str:
    """`s` with every absolute host path replaced by `...` (or `.../<file name>`): error bodies name no host
    folders (the runs folder, databases, configs, checkpoints, the temp or home folder)."""
    return _path_re().sub(_hide_path, s) if "/" in s or "\\" in s else s


def finite(v: float) -> float | str:
    """`v`, or for NaN/Infinity the text JSON has no number for (`NaN`, `Infinity`, `-Infinity`)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def encodable(s: str) -> str:
    """`s` with anything UTF-8 cannot encode (lone surrogates) replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def excerpt(v: Any, n: int = EXCERPT_CHARS) -> Any:
    """A short, encodable stand-in for a request value inside an error body."""
    if isinstance(v, str):
        v = encodable(v)
        return v if len(v) <= n else v[:n] + f"... ({len(v)} characters)"
    if isinstance(v, float):
        return finite(v)
    if isinstance(v, bool | int) or v is None:
        return v
    try:
        text = json.dumps(v, ensure_ascii=True, default=str)
    except (TypeError, ValueError):
        text = type(v).__name__
    return excerpt(text, n)


def _safe(v: Any, depth: int = 0) -> Any:
    if isinstance(v, str):
        return redact_paths(encodable(v))
    if isinstance(v, float):
        return finite(v)
    if isinstance(v, bool | int) or v is None:
        return v
    if depth > 32:
        return "..."
    if isinstance(v, dict):
        return {_safe(str(k)): _safe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_safe(x, depth + 1) for x in v]
    return redact_paths(encodable(str(v)))


# What an error body becomes when even the sanitised one cannot be rendered (it never should).
_FALLBACK = b'{"detail":"the error could not be described"}'


class SafeJSONResponse(JSONResponse):
    """The error response: a JSON body that cannot fail to render. Strings are made encodable and lose any
    host path (`redact_paths`), NaN/Infinity become text, and should rendering still fail, the body is a
    fixed JSON message (the status stays)."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(_safe(content), ensure_ascii=False, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("utf-8")
        except Exception:  # the last resort: still JSON
            log.exception("error body could not be rendered")
            return _FALLBACK


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` (checked on Content-Length and on the bytes
    received), before the application reads it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        return await self._reject(send)
                except ValueError:
                    return await self._reject(send, 400, "invalid Content-Length header")
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send, status: int = 413, detail: str | None = None):
        body = json.dumps({"detail": detail or f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors[:20]:
        item = {"type": e.get("type"), "loc": [_safe(x) for x in e.get("loc", ())], "msg": encodable(str(e.get("msg", "")))}
        if "input" in e:
            item["input"] = excerpt(e["input"])
        out.append(item)
    return out


def install(app: FastAPI, cfg) -> None:
    """Body limit, safe validation errors and the configuration-derived OpenAPI schema (see the module doc)."""
    app.add_middleware(BodyLimit, max_bytes=cfg.limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        return SafeJSONResponse({"detail": _validation_detail(list(e.errors()))}, status_code=422)

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = configure_schema(base_openapi(), cfg)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def configure_schema(schema: dict[str, Any], cfg) -> dict[str, Any]:
    """The generated OpenAPI schema with the configuration's bounds (see the module doc)."""
    schema = copy.deepcopy(schema)
    lim = cfg.limits
    comps = schema.setdefault("components", {}).setdefault("schemas", {})

    def prop(model: str, name: str) -> dict[str, Any] | None:
        p = comps.get(model, {}).get("properties", {}).get(name)
        if p is None:
            return None
        # pydantic writes Optional fields as anyOf [{type}, {type: null}]: bound the non-null branch
        for branch in p.get("anyOf", []):
            if branch.get("type") not in (None, "null"):
                return branch
        return p

    for model, name, key, value in (
        ("PlanRequest", "n", "maximum", lim.n_max),
        ("PlanRequest", "question", "maxLength", lim.question_max_chars),
        ("PlanRequest", "evidence", "maxLength", lim.question_max_chars),
        ("PlanRequest", "deadline_s", "maximum", lim.max_deadline_s),
        ("CheckRequest", "sql", "maxLength", lim.sql_max_chars),
        ("FeedbackRequest", "corrected_sql", "maxLength", lim.sql_max_chars),
    ):
        p = prop(model, name)
        if p is not None:
            p[key] = value
    pair = prop("PlanRequest", "pair")
    if pair is not None:
        pair.pop("maxLength", None)
        pair["enum"] = list(cfg.pairs)
    fb = comps.get("FeedbackRequest")
    if fb is not None:  # the model's validator: a label or a corrected SQL
        fb["anyOf"] = [{"required": ["correct"], "properties": {"correct": {"type": "boolean"}}},
                       {"required": ["corrected_sql"], "properties": {"corrected_sql": {"type": "string"}}}]
    # the checkpoint switch: one request schema per role, naming the configured checkpoints
    switch = comps.get("SwitchRequest")
    for role, names, path in (("Generator", list(cfg.generators), "/generators/active"),
                              ("Discriminator", list(cfg.discriminators), "/discriminators/active")):
        op = schema.get("paths", {}).get(path, {}).get("put")
        if switch is None or op is None:
            continue
        name = f"{role}SwitchRequest"
        sw = copy.deepcopy(switch)
        sw["title"] = name
        sw["properties"]["name"] = {"type": "string", "enum": names, "title": "Name"}
        comps[name] = sw
        op["requestBody"]["content"]["application/json"]["schema"] = {"$ref": f"#/components/schemas/{name}"}
    if not cfg.api_key:  # nothing to authenticate: advertise no security
        comps_all = schema.get("components", {})
        comps_all.pop("securitySchemes", None)
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                if isinstance(op, dict):
                    op.pop("security", None)
                    op.get("responses", {}).pop("401", None)
    return schema
