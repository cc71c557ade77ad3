"""Which errors from MLflow, Databricks and HTTP are worth retrying, and the policy that retries them.

Steps that talk to MLflow or Databricks carry a `RetryPolicy` with exponential backoff. Dagster
retries any exception except a `Failure(allow_retries=False)`, so calls to those systems go
through `fail_fast_unless_transient`: a connection error, a 429 or a 5xx is raised as it is
(and retried); anything else (bad credentials, a missing model, a bad request) becomes a
`Failure` that fails the step at once and says why.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dagster import Backoff, Failure, Jitter, RetryPolicy

from tabml_assets.dagster_compat import SerializableErrorInfo
from tabml_assets.spec import RetrySpec

F = TypeVar("F", bound=Callable[..., Any])

# Error codes of MLflow's REST API and of Databricks' that mean "try again later".
TRANSIENT_ERROR_CODES = frozenset(
    {
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
        "TOO_MANY_REQUESTS",
        "SERVICE_UNAVAILABLE",
        "INTERNAL_SERVER_ERROR",
        "ABORTED",
    }
)
TRANSIENT_HTTP_STATUSES = frozenset({408, 429})
# Exception classes (by name, so no client library has to be imported) that are network trouble.
TRANSIENT_EXCEPTION_NAMES = frozenset(
    {
        "ConnectionError",  # builtin and requests.exceptions
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "TimeoutError",
        "ChunkedEncodingError",
        "NewConnectionError",
        "MaxRetryError",
        "ProtocolError",
        "RemoteDisconnected",
        "TooManyRequests",  # databricks.sdk.errors
        "TemporarilyUnavailable",
        "DeadlineExceeded",
        "InternalError",
    }
)
_MAX_CHAIN = 10


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status of the response behind an error (requests, databricks-sdk), if any."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _is_transient_one(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if any(cls.__name__ in TRANSIENT_EXCEPTION_NAMES for cls in type(exc).__mro__):
        return True
    code = getattr(exc, "error_code", None)
    if isinstance(code, str) and code in TRANSIENT_ERROR_CODES:
        return True
    if code == "INTERNAL_ERROR":
        # MLflow uses INTERNAL_ERROR both for a server's 500 and for its own local errors; only
        # the first comes back from a server.
        return "failed with error code 5" in str(exc) or type(exc).__name__ == "RestException"
    status = http_status_of(exc)
    return status is not None and (status in TRANSIENT_HTTP_STATUSES or 500 <= status < 600)


def is_transient(exc: BaseException) -> bool:
    """True for errors that may go away by themselves: network trouble, throttling, a 5xx."""
    return any(_is_transient_one(link) for link in _exception_chain(exc))


# Builtin subclasses of ConnectionError and TimeoutError, which a recorded error names only.
_TRANSIENT_BUILTIN_NAMES = frozenset(
    {"ConnectionRefusedError", "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError"}
)


def is_transient_error_info(error: SerializableErrorInfo) -> bool:
    """`is_transient` for an error recorded in another process (a remote step's event)."""
    names = TRANSIENT_EXCEPTION_NAMES | _TRANSIENT_BUILTIN_NAMES
    current: SerializableErrorInfo | None = error
    for _ in range(_MAX_CHAIN):
        if current is None:
            return False
        if current.cls_name in names or any(code in current.message for code in TRANSIENT_ERROR_CODES):
            return True
        current = current.cause or current.context
    return False


@contextmanager
def fail_fast_unless_transient(operation: str) -> Iterator[None]:
    """Let transient errors through (the step's RetryPolicy retries them); fail at once otherwise."""
    try:
        yield
    except Failure:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        code = getattr(exc, "error_code", None)
        raise Failure(
            description=(
                f"{operation} failed with a permanent error (not retried): "
                f"{type(exc).__name__}{f' {code}' if code else ''}: {exc}"
            ),
            allow_retries=False,
        ) from exc


def transient_errors_only(fn: F) -> F:
    """Put under `@asset(retry_policy=...)`: only transient errors retry, any other fails at once.

    Dagster's RetryPolicy retries every exception; a fit that rejects its parameters or a
    missing column would otherwise run (and log an MLflow run) once per retry.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with fail_fast_unless_transient(fn.__name__):
                yield from fn(*args, **kwargs)

        return generator_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fail_fast_unless_transient(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def build_retry_policy(retries: RetrySpec) -> RetryPolicy:
    """Exponential backoff with jitter, so many steps hit by one outage do not retry in lockstep."""
    return RetryPolicy(
        max_retries=retries.max_retries,
        delay=retries.delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )
