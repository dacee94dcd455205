"""``isotune study``: the studies of a running server, from the command line (the server in
``--server`` / ``ISOTUNE_SERVER``, the token in ``--token`` / ``ISOTUNE_TOKEN``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.options import DbOpt, OptionError, ServerOpt, TokenOpt

__all__ = ["study_app"]

study_app = typer.Typer(name="study", help="Studies on a running server.", no_args_is_help=True)


def _client(server: str, token: str | None) -> Any:
    from contract.client import Client

    return Client(server, token, retry_seconds=5.0)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


def num(x: Any) -> str:
    """A number as people read it: 4 significant digits (0.225, not 0.22499999403953552)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "-" if x is None else str(x)
    return f"{x:.4g}"


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={num(v)}" for k, v in params.items())


def _spec_loader() -> type:
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true`` and ``false``. YAML 1.1 also
    reads ``off``, ``on``, ``yes``, ``no`` as booleans, which turns ``prior: {mode: off}`` into
    ``mode: false`` (and a study named ``no`` into ``false``)."""
    import re

    import yaml

    class SpecLoader(yaml.SafeLoader):
        pass

    bool_tag = "tag:yaml.org,2002:bool"
    SpecLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    SpecLoader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return SpecLoader


@study_app.command("create")
def study_create(
    file: Annotated[Path, typer.Option("-f", "--file", help="Study specification (YAML or JSON).")],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Create a study from a specification file."""
    import yaml

    try:
        spec = yaml.load(file.read_text(), Loader=_spec_loader())  # a SafeLoader
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
            typer.echo(f"{s['name']}  [{s['state']}]  {counts or 'no trials'}  best {num(best)}")


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


@study_app.command("adopt")
def study_adopt(
    name: str,
    optuna_study: Annotated[
        str | None,
        typer.Option(
            "--optuna-study", help="The Optuna study that carries it on (a rename's new name)."
        ),
    ] = None,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Re-attach an orphaned study (its Optuna study renamed or replaced, e.g. in
    optuna-dashboard) to the Optuna study now holding it; an admin token."""
    with _client(server, token) as c:
        s = c.adopt_study(name, optuna_study)
    typer.echo(f"study {s['name']} is {s['state']} again, {s['n_trials']} trials")


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
    name: str,
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """The best trial: its value, its parameters, its memory time ξ_C against the T/c the prior
    asks for, and the initialization it stands for (``--json``: all of it as the API gives it)."""
    with _client(server, token) as c:
        study = c.study(name)
    best = study["best"]
    if as_json:
        _print(best)
        return
    if best is None:
        raise OptionError("study", name, "has no completed trial yet")
    typer.echo(
        f"{name}: best trial {best['number']} (id {best['trial_id']}) value {num(best['value'])}"
    )
    typer.echo(f"params   {params_text(best['params'])}")
    theory = best.get("theory")
    if theory:
        typer.echo(
            f"xi_C     {num(theory['xi_c'])} steps; T = {theory['T']}, c = {num(theory['c'])}: "
            f"T/c = {num(theory['required_xi'])}, margin {num(theory['margin'])}, "
            f"{'predicted trainable' if theory['predicted_trainable'] else 'predicted untrainable'}"
        )
        typer.echo(f"init     {params_text(theory['init'])}")


@study_app.command("calibration")
def study_calibration(
    name: str, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None
) -> None:
    """The c a calibrated study hands out from now, the fitted edge with its 68 % interval, and
    the outcomes it rests on (``prior.calibrate``, on by default)."""
    with _client(server, token) as c:
        study = c.study(name)
    cal = study.get("calibration")
    prior = study["spec"].get("prior") or {}
    if cal is None:
        why = (
            "its prior is off" if prior.get("mode") == "off"
            else "calibrate is false" if prior.get("calibrate") is False
            else "no finished trial has been fitted yet (the server refits every few seconds)"
        )  # fmt: skip
        typer.echo(f"{name}: not calibrated: {why}")
        return
    typer.echo(
        f"{name}: c = {num(cal['c'])} (P(trained) >= {num(cal['p_min'])}), prior c0 = "
        f"{num(cal['c0'])}; fitted edge {num(cal['edge'])}, 68% interval "
        f"{num(cal['low'])}-{num(cal['high'])}; {cal['outcomes']} outcomes, {cal['trained']} "
        f"trained (value >= {num(cal['threshold'])})"
    )
    if cal.get("sources"):
        typer.echo(f"started from {cal['source_outcomes']} outcomes of {', '.join(cal['sources'])}")
    if cal.get("gate_p") is not None:
        typer.echo(
            f"restrict gates by the model: each point needs P(trained) >= {num(cal['gate_p'])}, "
            "its cell-state moment s* included"
        )


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
        typer.echo(
            f"{t['number']:>4}  {t['state']:<8}  {num(t['value']):>8}  {params_text(t['params'])}"
        )
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
    if artifact_dir is not None:  # before anything is drawn: the database the server uses
        from service.db import existing_database

        url = existing_database(database_url)
    with _client(server, token) as c:
        png = c.prior_map(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    typer.echo(f"wrote {out} ({len(png)} bytes)")
    if artifact_dir is not None:
        import optuna

        from service.db import optuna_storage, redact

        storage = optuna_storage(url)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise OptionError(
                "database_url", redact(url), f"holds no study {name!r}; pass the server's"
            ) from None
        store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir))
        artifact_dir.mkdir(parents=True, exist_ok=True)
        artifact = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(out), study_or_trial=study, mimetype="image/png"
        )
        typer.echo(f"attached to study {name} as artifact {artifact}")


def watch_table(study: dict[str, Any], trials: list[dict[str, Any]], rows: int = 20) -> str:
    """The live table of ``isotune study watch``: counts, best, and the latest trials with their
    state, memory time ξ_C and latest reported value."""
    counts = ", ".join(f"{k.lower()} {v}" for k, v in study["counts"].items() if v) or "no trials"
    best = study["best"]
    spec = study["spec"]
    head = f"{study['name']}  [{study['state']}]  {counts}"
    if best is not None:
        head += f"  best {best['value']:.4g} (trial {best['number']})"
    prior = spec.get("prior") or {}
    mode = prior.get("mode") or "off"
    theories = [t["user_attrs"].get("isotune_theory") or {} for t in trials]
    c = next((th["c"] for th in theories if "c" in th), prior.get("c"))
    bar = f"{spec['cell']} on {spec['task']['name']}, T = {spec['task']['T']}, prior {mode}"
    if c is not None:
        bar += f", c = {num(c)}: trainable when xi_C >= T/c = {num(spec['task']['T'] / c)}"
    head += "\n" + bar
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
