"""What both HTTP apps share: fast JSON, one error shape, parameter validation, the bearer token.

Errors are JSON `{"error": ..., "detail": ...}`; bad input is a 4xx naming the parameter; nothing an
HTTP client sends produces a 500 or a traceback (an internal failure is logged and answered as a JSON 500
without details).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

import falcon
import falcon.media
import orjson

from httpapi.guard import BodyLimit
from telemetry.logs import get_logger

__all__ = [
    "bad_param",
    "bool_param",
    "create_base_app",
    "float_param",
    "int_param",
    "json_body",
    "require_token",
    "str_param",
]

log = get_logger("mybot.http")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str | bytes) -> Any:
    return orjson.loads(text)


class OrjsonHandler(falcon.media.BaseHandler):
    exhaustive_stream = True

    def serialize(self, media: Any, content_type: str | None) -> bytes:
        return orjson.dumps(media, default=str, option=orjson.OPT_NON_STR_KEYS)

    def deserialize(self, stream: Any, content_type: str | None, content_length: int | None) -> Any:
        data = stream.read()
        if not data:
            raise falcon.HTTPBadRequest(title="empty body", description="a JSON body is required")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise falcon.HTTPBadRequest(title="malformed JSON", description=str(exc)) from exc


def _error_serializer(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    body: dict[str, Any] = {"error": exc.title or exc.status, "detail": exc.description}
    if getattr(exc, "param", None):
        body["param"] = exc.param  # type: ignore[attr-defined]
    resp.data = orjson.dumps(body)


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.event("HTTP_INTERNAL_ERROR", f"{req.method} {req.path}: {type(exc).__name__}: {exc}", level=40,
              exc_info=exc, path=req.path)
    raise falcon.HTTPInternalServerError(title="internal error", description="see the server log")


def create_base_app() -> falcon.App:
    app = falcon.App(cors_enable=False, middleware=[BodyLimit()])  # bodies over 64 KiB: 413 before any auth
    handler = OrjsonHandler()
    app.req_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(_error_serializer)
    app.add_error_handler(Exception, _unexpected)
    return app


class ParamError(falcon.HTTPBadRequest):
    def __init__(self, param: str, detail: str) -> None:
        super().__init__(title="invalid parameter", description=f"{param}: {detail}")
        self.param = param


def bad_param(param: str, detail: str) -> ParamError:
    return ParamError(param, detail)


def str_param(req: falcon.Request, name: str, *, required: bool = True, pattern: str | None = None,
              default: str | None = None, max_len: int = 64) -> str | None:
    values = req.params.get(name)
    if isinstance(values, list):
        raise bad_param(name, "given more than once")
    if values is None or values == "":
        if required:
            raise bad_param(name, "is required")
        return default
    if len(values) > max_len:
        raise bad_param(name, f"longer than {max_len} characters")
    if pattern and not re.fullmatch(pattern, values):
        raise bad_param(name, f"{values!r} is not valid")
    return values


def int_param(req: falcon.Request, name: str, *, default: int | None = None, minimum: int | None = None,
              maximum: int | None = None, multiple_of: int | None = None) -> int | None:
    text = str_param(req, name, required=default is None, max_len=20)
    if text is None:
        return default
    if not re.fullmatch(r"[+-]?\d+", text):
        raise bad_param(name, f"{text!r} is not an integer")
    value = int(text)
    if minimum is not None and value < minimum:
        raise bad_param(name, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise bad_param(name, f"must be <= {maximum}")
    if multiple_of and value % multiple_of:
        raise bad_param(name, f"must be a multiple of {multiple_of}")
    return value


def float_param(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_param(name, "must be a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise bad_param(name, "must be finite")
    if minimum is not None and value < minimum:
        raise bad_param(name, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise bad_param(name, f"must be <= {maximum}")
    return float(value)


def bool_param(req: falcon.Request, name: str, default: bool = False) -> bool:
    text = str_param(req, name, required=False, max_len=8)
    if text is None:
        return default
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_param(name, f"{text!r} is not true or false")


def json_body(req: falcon.Request) -> dict[str, Any]:
    if req.content_type is None or not req.content_type.startswith(falcon.MEDIA_JSON):
        raise falcon.HTTPUnsupportedMediaType(title="unsupported media type",
                                              description="send Content-Type: application/json")
    body = req.get_media()
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(title="invalid body", description="the body must be a JSON object")
    return body


def require_token(token_provider: Callable[[], str]) -> Callable[..., None]:
    """The control token check: bearer token compared in constant time; every call logged with who/what.

    Call it first thing in a mutating responder (`auth(req)`), or use it as a Falcon `before` hook.
    """

    def hook(req: falcon.Request, resp: falcon.Response | None = None, resource: Any = None,
             params: dict[str, Any] | None = None) -> None:
        expected = token_provider()
        header = req.get_header("Authorization") or ""
        scheme, _, presented = header.partition(" ")
        who = {"remote": req.remote_addr, "user_agent": (req.user_agent or "")[:80],
               "method": req.method, "path": req.path}
        if not expected:
            log.event("CONTROL_REFUSED", "control token not configured", level=30, **who)
            raise falcon.HTTPUnauthorized(title="unauthorized",
                                          description="no control token is configured on this server",
                                          challenges=["Bearer"])
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected.encode()):
            log.event("CONTROL_REFUSED", "bad or missing bearer token", level=30, **who)
            raise falcon.HTTPUnauthorized(title="unauthorized", description="a valid bearer token is required",
                                          challenges=["Bearer"])
        log.event("CONTROL_CALL", f"{req.method} {req.path}", **who)

    return hook
