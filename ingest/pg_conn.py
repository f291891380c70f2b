"""Bounded waits on PostgreSQL: every connection of the library's pool connects, is checked out, runs each
statement and gets each answer within a limit, so a database that is down, restarting, overloaded or hung
(a postmaster stopped with SIGSTOP accepts connections and never answers) costs a request a few seconds and a
503, never a hang.

Four limits, each for a different way to hang (tested in tests/test_pg_outages.py; measured by
bench/pg_outages.py, docs/scale.md "Outages": with the whole server stopped by SIGSTOP, 50 concurrent searches
got their 503 in 5.9-6.6 s p50, 8.2 s at most, on a 2-core VM at load 20; before, they hung 30-40 s):
- connect: psycopg's own `connect_timeout`, enforced in the client (it covers a listener that accepts the
  connection and then never answers the startup packet, which libpq's TCP connect alone does not).
- checkout: how long a request waits for a pooled connection (psycopg_pool's `timeout`).
- statement (and lock): the server's `statement_timeout` and `lock_timeout`, set on every pooled connection;
  an overloaded server cancels its own slow statements.
- answer: a client-side limit on every wait for the server (`GuardedConnection.wait`): a server that is stopped
  cannot cancel anything, and neither TCP keepalives (the stopped process's kernel still acknowledges them) nor
  the statement timeout fire. Past it the connection is closed (it is mid-protocol, in an unknown state) and
  the pool replaces it. It is the statement timeout plus a grace second, so a statement the server cancels in
  time reports the server's own error.
TCP keepalives are set too: they find a peer that vanished (a host or network gone) on an idle pooled
connection, which nothing else would notice until the next request."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


@dataclass(frozen=True)
class DbTimeouts:
    """Seconds. The defaults keep a request on a hung database under 10 s: a checkout (4) then one statement
    that gets no answer (4 + 1). The statement limit leaves room for the slowest searches measured at scale
    (p99 3.0 s for a whole HTTP search of a 1,000,000-chunk library, docs/scale.md)."""

    connect: float = 3.0
    checkout: float = 4.0
    statement: float = 4.0
    lock: float = 2.0
    write: float = 120.0
    grace: float = 1.0

    @property
    def answer(self) -> float:
        return self.statement + self.grace

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq parameters for every pooled connection: connect timeout (whole seconds, at least 2 as libpq
        reads it), TCP keepalives, and TCP's own limit on unacknowledged data (a vanished peer)."""
        return {"connect_timeout": max(2, round(self.connect)), **KEEPALIVES,
                "tcp_user_timeout": int(self.answer * 1000)}

    def session_sql(self) -> tuple[str, tuple[str, ...]]:
        """The server-side limits, set once per new connection (works through any pooler in session mode).
        A transaction left idle longer than a write may take (a client stopped mid-transaction, holding the
        write lock) is ended by the server."""
        return ("SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (ms(self.statement), ms(self.lock), ms(self.write + self.grace)))


def ms(seconds: float) -> str:
    """A PostgreSQL duration setting."""
    return f"{max(1, int(seconds * 1000))}ms"


@functools.cache
def connection_class() -> type[Any]:
    """GuardedConnection, defined on first use: psycopg loads only when the postgres store is chosen."""
    import psycopg
    from psycopg import errors as pg_errors

    class NoAnswer(psycopg.OperationalError):
        """The server did not answer within the client-side limit; the connection was closed."""

    class GuardedConnection(psycopg.Connection[Any]):
        """A psycopg connection whose every wait for the server has a deadline (`answer_within`, seconds; None:
        no limit). psycopg routes every exchange (execute, executemany, commit, rollback, the pool's reset)
        through `Connection.wait`, which takes a timeout since psycopg 3.2."""

        answer_within: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            limit = timeout if timeout is not None else self.answer_within
            try:
                return super().wait(gen, interval=interval, timeout=limit)
            except pg_errors._WaitTimeout:  # psycopg's (private) name for exactly this
                if timeout is not None:
                    raise
                self.pgconn.finish()  # mid-protocol: never reuse it (the pool discards a closed connection)
                raise NoAnswer(f"the database did not answer within {limit:g} s") from None

    return GuardedConnection


@contextlib.contextmanager
def answering_within(conn: Any, seconds: float | None) -> Iterator[None]:
    """A different client-side answer limit for the waits inside the block (a write transaction, a lock wait)."""
    before = conn.answer_within
    conn.answer_within = seconds
    try:
        yield
    finally:
        conn.answer_within = before
