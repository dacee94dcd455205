"""The contract between the study service and its workers, importable by both sides.

What the two sides agree on, and nothing else: the task specifications and their input statistics
(:mod:`contract.tasks`), the training options a study may set (:mod:`contract.training`), the
shapes that travel over the wire (:mod:`contract.wire`), the REST client (:mod:`contract.client`)
and the one error base every package's errors derive from (:mod:`contract.errors`).

It imports no torch, FastAPI, Optuna or SQLAlchemy (``tests/test_layering.py`` checks it), so
the server validates a study against the same rules a worker trains by, without either side
importing the other. The submodules are not imported here: :mod:`contract.errors` alone needs
nothing beyond the standard library, which is what lets :mod:`meanfield` derive from it.
"""

__all__ = ["client", "errors", "tasks", "training", "wire"]
