"""``isotune serve``, ``isotune db``, ``isotune token`` and ``isotune study``: the service from the
command line. The server's database comes from ``--database-url`` or ``ISOTUNE_DATABASE_URL``
(default: ``sqlite:///isotune.db``); clients find the server in ``--server`` / ``ISOTUNE_SERVER``
and their token in ``--token`` / ``ISOTUNE_TOKEN``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from contract.errors import IsotuneError

__all__ = ["dashboard_cmd", "db_app", "serve_cmd", "study_app", "token_app"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

HostOpt = Annotated[str, typer.Option("--host", help="Interface to bind.")]
PortOpt = Annotated[int, typer.Option("--port", help="TCP port.")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: $ISOTUNE_DATABASE_URL or sqlite:///isotune.db).",
    ),
]
ServerOpt = Annotated[
    str, typer.Option("--server", envvar="ISOTUNE_SERVER", help="Server base URL.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="ISOTUNE_TOKEN", help="Bearer token.")
]

db_app = typer.Typer(name="db", help="The service's database.", no_args_is_help=True)
token_app = typer.Typer(name="token", help="API tokens.", no_args_is_help=True)
study_app = typer.Typer(name="study", help="Studies on a running server.", no_args_is_help=True)


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


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, worker or reader.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "token",
    database_url: DbOpt = None,
) -> None:
    """Create a token and print it (it is stored hashed: this is the only time it is shown)."""
    from service.auth import create_token
    from service.db import database_url as resolve
    from service.db import make_engine, session_factory
    from service.migrate import upgrade

    if role not in ("admin", "worker", "reader"):
        raise OptionError("role", role, "choose admin, worker or reader")
    url = resolve(database_url)
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as session:
            token = create_token(session, name, role)
    finally:
        engine.dispose()
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Option("--name", help="Revoke every token of this name.")],
    database_url: DbOpt = None,
) -> None:
    """Revoke tokens by name (servers stop accepting them within 5 s)."""
    from sqlalchemy import update

    from service.db import database_url as resolve
    from service.db import make_engine, session_factory
    from service.models import Token
    from service.store import now

    engine = make_engine(resolve(database_url))
    try:
        with session_factory(engine).begin() as session:
            done = session.execute(
                update(Token)
                .where(Token.name == name, Token.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            count = done.rowcount  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    if not count:
        raise OptionError("name", name, "no active token of that name")
    typer.echo(f"revoked {count} token(s) named {name}")


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
        if workers == 1:
            app = build_app(Settings(database_url=url, auth=not no_auth, **tuned))
            typer.echo(f"isotune server on {where}", err=True)
            uvicorn.run(app, host=host, port=port, log_level="warning")
            return
        upgrade(url)  # once, before the processes start
        # every process builds its app from the same settings, pickled into it
        settings = Settings(database_url=url, auth=not no_auth, migrate=False, **tuned)
        # the processes' metrics meet in one directory (prometheus_client's multiprocess mode,
        # which reads this variable in each process)
        metrics_dir = tempfile.mkdtemp(prefix="isotune-metrics-")
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        typer.echo(f"isotune server ({workers} processes) on {where}", err=True)
        _serve_processes(settings, host, port, workers)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        if lock is not None:
            lock.close()


def _serve_processes(settings: Any, host: str, port: int, workers: int) -> None:
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
    )
    sock = config.bind_socket()
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
    typer.echo(
        f"optuna-dashboard on http://{host}:{port}/dashboard {mode}, database {redact(url)}, "
        f"artifacts in {artifact_dir}",
        err=True,
    )
    with make_server(host, port, app, server_class=Server, handler_class=Quiet) as httpd:
        httpd.serve_forever()


class OptionError(IsotuneError, ValueError):
    """A command-line option with an unusable value (``error: <field>=<value>: <reason>``)."""


def _client(server: str, token: str | None) -> Any:
    from contract.client import Client

    return Client(server, token, retry_seconds=5.0)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


@study_app.command("create")
def study_create(
    file: Annotated[Path, typer.Option("-f", "--file", help="Study specification (YAML or JSON).")],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Create a study from a specification file."""
    import yaml

    try:
        spec = yaml.safe_load(file.read_text())
    except OSError as e:
        raise OptionError("file", str(file), f"cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise OptionError("file", str(file), f"not valid YAML or JSON{at}: {problem}") from None
    if not isinstance(spec, dict):
        raise OptionError("file", str(file), "must hold one mapping (the study specification)")
    with _client(server, token) as c:
        _print(c.create_study(spec))


@study_app.command("export")
def study_export(
    name: str,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="File to write (default: standard output).")
    ] = None,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """A study's specification and every trial as JSON (for ``isotune study import``)."""
    with _client(server, token) as c:
        data = c.export_study(name)
    text = json.dumps(data, indent=1) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote study {name} ({len(data['trials'])} trials) to {out}")


@study_app.command("import")
def study_import(
    file: Annotated[Path, typer.Argument(help="A file written by isotune study export.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the new study (default: the exported).")
    ] = None,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Create a study from an export, with its trials."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise OptionError("file", str(file), f"not a readable JSON export ({e})") from None
    with _client(server, token) as c:
        s = c.import_study(data, name)
    counts = ", ".join(f"{k.lower()} {v}" for k, v in s["counts"].items() if v)
    typer.echo(f"imported study {s['name']}: {counts or 'no trials'}")


@study_app.command("list")
def study_list(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Studies with their trial counts."""
    with _client(server, token) as c:
        for s in c.studies():
            counts = ", ".join(f"{k.lower()} {v}" for k, v in s["counts"].items() if v)
            best = s["best"]["value"] if s["best"] else None
            typer.echo(f"{s['name']}  [{s['state']}]  {counts or 'no trials'}  best {best}")


@study_app.command("show")
def study_show(
    name: str, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None
) -> None:
    """A study's specification, counts and best trial."""
    with _client(server, token) as c:
        _print(c.study(name))


@study_app.command("archive")
def study_archive(
    name: str, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None
) -> None:
    """Stop handing out trials of a study (its trials stay); an admin token."""
    with _client(server, token) as c:
        s = c.archive_study(name)
    typer.echo(f"study {s['name']} is {s['state']}")


@study_app.command("delete")
def study_delete(
    name: str, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None
) -> None:
    """Delete a study with its trials and leases (also one orphaned by optuna-dashboard)."""
    with _client(server, token) as c:
        c.delete_study(name)
    typer.echo(f"deleted study {name}")


@study_app.command("best")
def study_best(
    name: str, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None
) -> None:
    """The best trial's value and parameters."""
    with _client(server, token) as c:
        _print(c.study(name)["best"])


@study_app.command("trials")
def study_trials(
    name: str,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    limit: Annotated[int, typer.Option("--limit")] = 100,
) -> None:
    """One page of a study's trials."""
    with _client(server, token) as c:
        page = c.trials(name, offset, limit)
    for t in page["trials"]:
        typer.echo(f"{t['number']:>4}  {t['state']:<8}  {t['value']}  {t['params']}")
    typer.echo(f"({len(page['trials'])} of {page['total']})")


@study_app.command("plot")
def study_plot(
    name: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("prior_map.png"),
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(
            "--artifact-dir",
            help="Also attach the map to the study in this artifact store (optuna-dashboard's).",
        ),
    ] = None,
    database_url: DbOpt = None,
) -> None:
    """Write the study's prior map (ξ_C, the criterion's contour, the trials) as PNG."""
    with _client(server, token) as c:
        png = c.prior_map(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    typer.echo(f"wrote {out} ({len(png)} bytes)")
    if artifact_dir is not None:
        import optuna

        from service.db import database_url as resolve
        from service.db import optuna_storage

        storage = optuna_storage(resolve(database_url))
        store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir))
        artifact_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.load_study(study_name=name, storage=storage)
        artifact = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(out), study_or_trial=study, mimetype="image/png"
        )
        typer.echo(f"attached to study {name} as artifact {artifact}")


def watch_table(study: dict[str, Any], trials: list[dict[str, Any]], rows: int = 20) -> str:
    """The live table of ``isotune study watch``: counts, best, and the latest trials with their
    state, memory time ξ_C and latest reported value."""
    counts = ", ".join(f"{k.lower()} {v}" for k, v in study["counts"].items() if v) or "no trials"
    best = study["best"]
    head = f"{study['name']}  [{study['state']}]  {counts}"
    if best is not None:
        head += f"  best {best['value']:.4g} (trial {best['number']})"
    lines = [head, f"{'trial':>5}  {'state':<8}  {'xi_C':>8}  {'latest':>8}  {'step':>6}  worker"]
    for t in trials[-rows:]:
        theory = t["user_attrs"].get("isotune_theory") or {}
        xi = theory.get("xi_c")
        steps = t["intermediate_values"]
        last = max(steps, key=int) if steps else None
        value = t["value"] if t["value"] is not None else (steps[last] if last else None)
        lines.append(
            f"{t['number']:>5}  {t['state']:<8}  "
            f"{'–' if xi is None else f'{xi:.3g}':>8}  "
            f"{'–' if value is None else f'{value:.4g}':>8}  "
            f"{last or '–':>6}  {t['user_attrs'].get('isotune_worker', '')}"
        )
    return "\n".join(lines)


@study_app.command("watch")
def study_watch(
    name: str,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    every: Annotated[float, typer.Option("--every", help="Seconds between refreshes.")] = 2.0,
    rows: Annotated[int, typer.Option("--rows", help="Latest trials shown.")] = 20,
    once: Annotated[bool, typer.Option("--once", help="Print the table once and exit.")] = False,
) -> None:
    """A live table of a study's trials (state, ξ_C, latest value), refreshed until Ctrl-C or the
    study is done."""
    import time

    with _client(server, token) as c:
        while True:
            study = c.study(name)
            total = study["n_trials"]
            page = c.trials(name, max(0, total - rows), rows)["trials"]
            table = watch_table(study, page, rows)
            if once:
                typer.echo(table)
                return
            typer.echo("\x1b[2J\x1b[H" + table)  # clear the screen, then draw
            running = study["counts"]["RUNNING"] + study["counts"]["WAITING"]
            if total >= study["spec"]["budget"] and not running:
                return
            time.sleep(every)
