"""What a member is told when something goes wrong, and what is logged.

Three kinds of failure:
- `UserError`: the member asked for something we refuse (unknown artist, over quota, ...). The
  message is the answer, nothing is logged as an error.
- The database or storage is unreachable: a plain sentence that nothing was lost and when to retry.
- Anything else: a bug. The member gets a short error id; the log gets the traceback under that
  id. Tracebacks, URLs and secrets never reach Discord.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy.exc import DBAPIError, OperationalError

from db.database import DatabaseUnavailable

log = logging.getLogger("jukebot.bot")

DB_DOWN = (
    "The studio's database is not answering right now, so I could not do that. Nothing was lost: "
    "please try again in a minute."
)


class UserError(Exception):
    """A refusal meant for the member, shown as is (ephemeral)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_error_id() -> str:
    return secrets.token_hex(4)


def is_database_down(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DatabaseUnavailable | OperationalError):
            return True
        if isinstance(cur, DBAPIError) and cur.connection_invalidated:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def unwrap(exc: BaseException) -> BaseException:
    """The original exception inside discord.py's wrappers (CommandInvokeError and friends)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "original", None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def explain(exc: BaseException, *, where: str) -> str:
    """The message for the member; logs what a maintainer needs (with an error id for bugs)."""
    exc = unwrap(exc)
    if isinstance(exc, UserError):
        return exc.message
    if is_database_down(exc):
        log.warning("database unavailable during %s: %s", where, exc)
        return DB_DOWN
    error_id = new_error_id()
    log.error("error %s during %s", error_id, where, exc_info=(type(exc), exc, exc.__traceback__))
    return (
        f"Something went wrong on my side (error id `{error_id}`). Nothing you asked for was lost; "
        "please try again, and if it keeps happening give this id to a moderator."
    )
