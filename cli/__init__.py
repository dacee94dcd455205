"""isotune's command line (Typer app ``isotune``; see :mod:`cli.main`).

Commands only translate between flags and plain function calls; exit codes are assigned in
:mod:`cli.main` only. Heavy modules (matplotlib) are imported inside the commands that need them.
"""
