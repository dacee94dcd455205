"""``isotune serve``, ``isotune dashboard``, ``isotune db`` and ``isotune token``: the server side
of the service from the command line (its database from ``--database-url`` or
``ISOTUNE_DATABASE_URL``)."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.options import LOOPBACK, DbOpt, HostOpt, OptionError, PortOpt

#: How long the server keeps an idle connection open. Longer than a client's own idle limit (the
#: worker's httpx client drops a connection idle for 5 s), so a client never sends its next
#: request on a connection the server is closing at that moment (a reset, with uvicorn's default
#: of 5 s, when a worker's calls come about 5 s apart), and longer than the 60 s idle limit of
#: common load balancers in front of it.
KEEP_ALIVE_SECONDS = 75

__all__ = ["dashboard_cmd", "db_app", "serve_cmd", "token_app"]

db_app = typer.Typer(name="db", help="The service's database.", no_args_is_help=True)
token_app = typer.Typer(name="token", help="API tokens.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(database_url: DbOpt = None) -> None:
    """Create or upgrade Optuna's and isotune's tables (idempotent)."""
    from service.db import database_url as resolve
    from service.db import redact
    from service.migrate import upgrade

    url = resolve(database_url)
    upgrade(url)
    typer.echo(f"database at {redact(url)} is up to date")


@db_app.command("backup")
def db_backup(
    to: Annotated[Path, typer.Option("--to", help="The backup file to create.")],
    database_url: DbOpt = None,
) -> None:
    """Copy a SQLite database to a new file with SQLite's online backup: consistent while the
    server runs. PostgreSQL: use pg_dump and pg_restore (README, "Backup and restore")."""
    import sqlite3

    from sqlalchemy.engine import make_url

    from service.db import database_url as resolve
    from service.db import is_sqlite, redact

    url = resolve(database_url)
    if not is_sqlite(url):
        raise OptionError(
            "database-url", redact(url), "backs up SQLite files; for PostgreSQL use pg_dump -Fc"
        )
    source = make_url(url).database
    if not source or source == ":memory:" or not Path(source).is_file():
        raise OptionError("database-url", redact(url), "no SQLite file there")
    if to.exists():
        raise OptionError("to", str(to), "exists already; choose a new file")
    src, dst = sqlite3.connect(source), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    typer.echo(f"backed up {source} to {to}")


@contextlib.contextmanager
def _token_session(url: str) -> Iterator[Any]:
    """One transaction on the database at ``url``, its engine disposed afterwards."""
    from service.db import make_engine, session_factory

    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, worker or reader.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "token",
    database_url: DbOpt = None,
) -> None:
    """Create a token and print it (it is stored hashed: this is the only time it is shown)."""
    from service.auth import create_token
    from service.db import database_url as resolve
    from service.migrate import upgrade

    if role not in ("admin", "worker", "reader"):
        raise OptionError("role", role, "choose admin, worker or reader")
    url = resolve(database_url)
    upgrade(url)
    with _token_session(url) as session:
        token = create_token(session, name, role)
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Option("--name", help="Revoke every token of this name.")],
    database_url: DbOpt = None,
) -> None:
    """Revoke tokens by name (servers stop accepting them within 5 s)."""
    from sqlalchemy import update

    from service.db import existing_database
    from service.models import Token
    from service.store import now

    with _token_session(existing_database(database_url)) as session:
        done = session.execute(
            update(Token)
            .where(Token.name == name, Token.revoked_at.is_(None))
            .values(revoked_at=now())
        )
        count = done.rowcount  # type: ignore[attr-defined]
    if not count:
        raise OptionError("name", name, "no active token of that name")
    typer.echo(f"revoked {count} token(s) named {name}")


@token_app.command("list")
def token_list(database_url: DbOpt = None) -> None:
    """The tokens: name, role, when created and revoked (never the tokens themselves)."""
    from sqlalchemy import select

    from service.db import existing_database
    from service.models import Token

    with _token_session(existing_database(database_url)) as session:
        rows = [
            (t.name, t.role, t.created_at, t.revoked_at)
            for t in session.scalars(select(Token).order_by(Token.id))
        ]
    table = [["name", "role", "created (UTC)", "revoked (UTC)"]]
    for name, role, created, revoked in rows:
        table.append([name, role, _when(created), _when(revoked) if revoked else "-"])
    width = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        typer.echo("  ".join([*(x.ljust(w) for x, w in zip(r, width, strict=False)), r[3]]))
    if not rows:
        typer.echo("(no tokens: isotune token create --role admin makes the first)")


def _when(t: Any) -> str:
    from service.store import aware

    return aware(t).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def serve_cmd(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    database_url: DbOpt = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without tokens (loopback only).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", help="Server processes (PostgreSQL only; SQLite allows one writer)."
        ),
    ] = 1,
    reap_interval: Annotated[
        float | None, typer.Option("--reap-interval", hidden=True, min=0.05)
    ] = None,  # for the tests: seconds between reaper passes (default: Settings.reap_interval)
) -> None:
    """Run the REST API (``/api/v1``; schema at ``/openapi.json``; metrics at ``/metrics``)."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from service.api import build_app
    from service.db import database_url as resolve
    from service.db import is_sqlite, redact
    from service.locks import sqlite_server_lock
    from service.migrate import upgrade
    from service.settings import Settings

    if no_auth and host not in LOOPBACK:
        raise OptionError("host", host, "--no-auth is only allowed on a loopback address")
    url = resolve(database_url)
    if workers < 1 or (workers > 1 and is_sqlite(url)):
        reason = "must be at least 1" if workers < 1 else "SQLite serves one process; use 1"
        raise OptionError("workers", workers, reason)
    lock = sqlite_server_lock(url) if is_sqlite(url) else None
    tuned = {} if reap_interval is None else {"reap_interval": reap_interval}
    try:
        mode = "WITHOUT authentication (local development)" if no_auth else "with bearer tokens"
        where = f"http://{host}:{port}/api/v1, database {redact(url)}, {mode}"
        sock = listen(host, port)  # before the banner: a port in use is one line, exit 2
        if workers == 1:
            try:
                app = build_app(Settings(database_url=url, auth=not no_auth, **tuned))
                typer.echo(f"isotune server on {where}", err=True)
                config = uvicorn.Config(
                    app, host=host, port=port, log_level="warning",
                    timeout_keep_alive=KEEP_ALIVE_SECONDS,
                )  # fmt: skip
                uvicorn.Server(config).run(sockets=[sock])
            finally:
                sock.close()
            return
        upgrade(url)  # once, before the processes start
        # every process builds its app from the same settings, pickled into it
        settings = Settings(database_url=url, auth=not no_auth, migrate=False, **tuned)
        # the processes' metrics meet in one directory (prometheus_client's multiprocess mode,
        # which reads this variable in each process)
        metrics_dir = tempfile.mkdtemp(prefix="isotune-metrics-")
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        typer.echo(f"isotune server ({workers} processes) on {where}", err=True)
        _serve_processes(settings, host, port, workers, sock)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        if lock is not None:
            lock.close()


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds it, for its processes to inherit);
    :class:`OptionError` naming the port when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as e:
        raise OptionError("host", host, f"cannot resolve it ({e.strerror or e})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            reason += " (another server? pick another --port)"
        raise OptionError("port", port, f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _serve_processes(
    settings: Any, host: str, port: int, workers: int, sock: socket.socket
) -> None:
    """``workers`` uvicorn processes on one socket, each running ``build_app(settings)``
    (uvicorn's own supervisor: it restarts a process that dies and stops them all on SIGTERM)."""
    import functools
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from service.api import build_app

    config = uvicorn.Config(
        functools.partial(build_app, settings),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    try:
        if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
            Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        else:
            Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def dashboard_cmd(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    database_url: DbOpt = None,
    artifact_dir: Annotated[
        Path, typer.Option("--artifact-dir", help="Artifact store (files the studies attach).")
    ] = Path("artifacts"),
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without tokens (loopback only).")
    ] = False,
) -> None:
    """Run optuna-dashboard on the service's database. Every request needs an isotune token
    (role reader or above) as the password of HTTP Basic authentication, any user name."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna
    from optuna_dashboard import wsgi

    from service.auth import lookup_role
    from service.dashboard import TokenGate
    from service.db import database_url as resolve
    from service.db import make_engine, optuna_storage, redact, session_factory

    if no_auth and host not in LOOPBACK:
        raise OptionError("host", host, "--no-auth is only allowed on a loopback address")
    url = resolve(database_url)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir))
    app = wsgi(optuna_storage(url), artifact_store=store)
    if not no_auth:
        sessions = session_factory(make_engine(url))

        def lookup(token: str) -> str | None:
            with sessions() as session:
                return lookup_role(session, token)

        app = TokenGate(app, lookup)

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no access log
            pass

    mode = "WITHOUT authentication" if no_auth else "with isotune tokens (HTTP Basic password)"
    try:
        httpd = make_server(host, port, app, server_class=Server, handler_class=Quiet)
    except OSError as e:  # before the banner: a port in use is one line, exit 2
        raise OptionError(
            "port", port, f"cannot listen on {host}:{port}: {e.strerror or e}"
        ) from None
    typer.echo(
        f"optuna-dashboard on http://{host}:{port}/dashboard {mode}, database {redact(url)}, "
        f"artifacts in {artifact_dir}",
        err=True,
    )
    with httpd:
        httpd.serve_forever()
