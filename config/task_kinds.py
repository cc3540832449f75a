"""The kinds of Celery task crowdloop declares, and the broker limits they all respect.

Every task runs at least once per request, possibly more (``acks_late``; Redis redelivers a
message whose worker vanished after the visibility timeout), so each one starts by checking the
database. Limits and retry back-offs stay below the visibility timeout, read here and nowhere
else, so that Redis never hands a task that is still running to a second worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from celery import Task, current_app, shared_task
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")

#: The longest wait between two tries of a task, whatever the visibility timeout.
BACKOFF_CAP_S = 600.0


def visibility_timeout() -> float:
    """Seconds Redis waits for a delivered message's acknowledgement before redelivering it."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    return float(options.get("visibility_timeout", 3600))


def backoff_max() -> int:
    """The longest retry back-off: a quarter of the visibility timeout, at most ten minutes, so a
    task waiting to retry is never redelivered as a duplicate (codecov/umbrella#720)."""
    return int(max(1.0, min(BACKOFF_CAP_S, visibility_timeout() / 4)))


# Typed like celery-types' shared_task: the decorated function becomes a Task whose ``delay``
# takes the function's own arguments; a bound one (bind=True) also takes the task as its first.
@overload
def at_least_once_task(
    *,
    name: str,
    redeliver_on_worker_loss: bool,
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (),
    retry_backoff: int = 30,
    max_retries: int = 5,
    ignore_result: bool | None = None,
    bind: Literal[False] = False,
    **options: Any,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


@overload
def at_least_once_task(
    *,
    name: str,
    redeliver_on_worker_loss: bool,
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (),
    retry_backoff: int = 30,
    max_retries: int = 5,
    ignore_result: bool | None = None,
    bind: Literal[True],
    **options: Any,
) -> Callable[[Callable[Concatenate[Task[..., Any], P], R]], Task[P, R]]: ...


def at_least_once_task(
    *,
    name: str,
    redeliver_on_worker_loss: bool,
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (),
    retry_backoff: int = 30,
    max_retries: int = 5,
    ignore_result: bool | None = None,
    bind: bool = False,
    **options: Any,
) -> Callable[[Callable[..., R]], Task[..., R]]:
    """Declare a task that is acknowledged only when done and retried with a capped back-off.

    ``redeliver_on_worker_loss`` sets ``reject_on_worker_lost``: only for tasks with a poison
    guard in the database (attempts counted at claim), since a task that kills its worker would
    otherwise be redelivered forever (celery#8969). ``autoretry_for`` lists the errors worth
    another try (transient ones); the back-off doubles from ``retry_backoff`` seconds with
    jitter, up to :func:`backoff_max`. ``ignore_result`` None keeps the app's default.
    """
    if ignore_result is not None:
        options["ignore_result"] = ignore_result
    retry: dict[str, Any] = (
        {
            "autoretry_for": autoretry_for,
            "retry_backoff": retry_backoff,
            "retry_backoff_max": backoff_max(),
            "retry_jitter": True,
        }
        if autoretry_for
        else {}
    )

    def decorate(func: Callable[..., R]) -> Task[..., R]:
        return shared_task(
            name=name,
            acks_late=True,
            reject_on_worker_lost=redeliver_on_worker_loss,
            max_retries=max_retries,
            # celery-types says int, but Celery takes None: the Task default, no limit.
            soft_time_limit=soft_time_limit,  # type: ignore[arg-type]  # None: no limit
            time_limit=time_limit,  # type: ignore[arg-type]  # None: no limit
            bind=bind,
            **retry,
            **options,
        )(func)

    return decorate


def task_named(name: str) -> Task:
    """The registered task called ``name``, for a service to send without importing its tasks
    module: tasks call services, services never import tasks (no import circle).

    The tasks modules are imported the first time a name is missing, by Celery's own
    autodiscovery (as a worker does when it starts), so that a command that sends no task does
    not pay for importing them at start-up."""
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[name]


def broker_errors() -> tuple[type[BaseException], ...]:
    """What a send raises when the broker is down: kombu wraps most, redis-py raises some."""
    from kombu.exceptions import OperationalError as KombuOperationalError

    errors: list[type[BaseException]] = [KombuOperationalError, ConnectionError, TimeoutError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # pragma: no cover - redis is a pinned requirement
        pass
    return tuple(errors)
