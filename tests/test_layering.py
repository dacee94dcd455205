"""The import rules of the tree, checked on the source: who may import whom.

- ``service`` and ``workers`` never import each other; both import the ``contract`` package;
- ``contract`` imports nothing of ours outside itself, and no torch, FastAPI, Optuna or SQLAlchemy;
- ``meanfield`` imports nothing of ours but ``contract.errors`` (the error base, standard library
  only);
- no module of ours is much over 500 lines (``benchmarks/`` excepted).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "meanfield", "service", "workers", "cli", "migrations")
HEAVY = ("torch", "fastapi", "starlette", "optuna", "sqlalchemy", "uvicorn", "alembic")
MAX_LINES = 520


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.partition(".")[0]


def imports_of(package: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported(p) for p in modules(package)}


@pytest.mark.parametrize(("package", "other"), [("service", "workers"), ("workers", "service")])
def test_service_and_workers_never_import_each_other(package: str, other: str) -> None:
    bad = {
        f: sorted(n for n in names if top(n) == other) for f, names in imports_of(package).items()
    }
    assert not {f: n for f, n in bad.items() if n}, f"{package} imports {other}"


@pytest.mark.parametrize("package", ["service", "workers"])
def test_both_sides_import_the_contract(package: str) -> None:
    users = [
        f for f, names in imports_of(package).items() if any(top(n) == "contract" for n in names)
    ]
    assert users, f"no module of {package} imports the contract package"


def test_contract_imports_nothing_of_ours_and_nothing_heavy() -> None:
    for f, names in imports_of("contract").items():
        ours = {n for n in names if top(n) in PACKAGES and top(n) != "contract"}
        heavy = {n for n in names if top(n) in HEAVY}
        assert not ours and not heavy, f"{f} imports {sorted(ours | heavy)}"


def test_contract_loads_without_heavy_packages() -> None:
    """Importing every contract module pulls in none of the heavy packages (a real import, in a
    fresh interpreter, so transitive imports count too)."""
    code = (
        "import sys, contract.errors, contract.tasks, contract.training, contract.wire, "
        "contract.client; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_meanfield_imports_only_the_error_base_of_ours() -> None:
    for f, names in imports_of("meanfield").items():
        ours = {n for n in names if top(n) in PACKAGES and top(n) != "meanfield"}
        assert ours <= {"contract.errors"}, f"{f} imports {sorted(ours)}"


def test_the_error_base_imports_only_the_standard_library() -> None:
    names = {top(n) for n in imported(ROOT / "contract" / "errors.py")}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_every_package_error_derives_from_the_one_base() -> None:
    from cli.options import OptionError
    from contract.errors import IsotuneError
    from contract.tasks import TaskError
    from contract.training import TrainError
    from meanfield import MeanFieldError
    from service.db import DatabaseError
    from service.errors import Conflict, Invalid, NotFound
    from service.prior import PriorError

    for cls in (MeanFieldError, TaskError, TrainError, DatabaseError, PriorError, Invalid,
                Conflict, NotFound, OptionError):  # fmt: skip
        assert issubclass(cls, IsotuneError), cls
        e = cls("field", 1.5, "reason") if cls is not NotFound else cls("field", 1.5)
        assert (e.field, e.value) == ("field", 1.5) and e.reason and "field=" in str(e)


def test_no_module_is_much_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in modules(package)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules by job: {long}"


def test_no_tracked_file_names_a_folder_of_a_development_machine() -> None:
    """Reports and docs name paths relative to the repository, never a machine's own folders (a
    report written to a temporary folder and copied in names it by its last part only)."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    else:  # a copy of the tree without its history

        def kept(parts: tuple[str, ...]) -> bool:  # no caches, virtualenvs, outputs
            return not any(
                p.startswith(".") or p in ("out", "__pycache__") or p.endswith(".egg-info")
                for p in parts[:-1]
            )

        listed = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and kept(p.relative_to(ROOT).parts)
        ]
    machine = tuple("/" + d + "/" for d in ("work", "root", "home/runner"))  # not in this file
    found = []
    for name in listed:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".jpg", ".pdf"}:
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {m}" for m in machine if m in text]
        if name.startswith("benchmarks/results/") and '"/' + "tmp/" in text:  # a run's --out
            found.append(f"{name}: a temporary folder")
    assert not found, found


@pytest.mark.parametrize("image", ["server", "worker"])
def test_every_package_is_copied_into_the_images(image: str) -> None:
    """The images install the project from its packages: each one pyproject lists is copied."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "docker" / f"{image}.Dockerfile").read_text()
    missing = [p for p in listed if f"COPY {p} {p}" not in dockerfile]
    assert not missing, f"docker/{image}.Dockerfile does not copy {missing}"
