"""Long-memory sequence tasks as batches of torch tensors.

``make_task(name, T, seed, **options)`` returns a :class:`Task` whose :class:`TaskSpec` (from
:mod:`contract.tasks`, torch-free) gives the shapes and the bridge statistics the theory uses.
Every batch is time-major, ``x`` of shape ``(seq_len, batch, input_size)`` (``nn.LSTM``'s default
layout), and is a pure function of the ``torch.Generator`` passed to :meth:`Task.sample` (CPU
tensors; move them to the model's device). The model's output is read at the last
``spec.output_steps`` steps.

Constructions (T is the bridge length):

- ``copy`` (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): one-hot inputs over
  ``alphabet + 2`` channels (symbols ``0..alphabet-1``, blank = ``alphabet``, go = ``alphabet+1``):
  ``n_symbols`` uniform symbols, ``T`` blanks, the go marker, ``n_symbols − 1`` blanks; the
  targets are the symbols, read at the last ``n_symbols`` steps. seq_len = 2·n_symbols + T.
- ``adding`` (Hochreiter & Schmidhuber 1997; Le et al. 2015): channel 0 holds U(0, 1) values at
  every step, channel 1 marks two distinct positions drawn uniformly in the first
  W = max(2, ⌊T/9⌋) steps (≤ 10 % of the sequence); the target, read at the last step, is the sum
  of the two marked values (in [0, 2]). seq_len = W + T, so the answer lies T to T + W − 1 steps
  back. A prediction counts as correct when |prediction − target| < 0.04.
- padded classification: an example's own sequence (rows or pixels), standardized by fixed
  constants, then ``T`` padding steps (zeros, or i.i.d. N(0, noise_std²) drawn from the
  generator); one of 10 classes read at the last step. Sources: ``padded_digits`` (sklearn's
  ``load_digits``, a fixed 80/20 split), ``mnist1d`` (MNIST-1D generated locally with the
  library's seed 42, ``num_samples`` examples, its own 80/20 split), ``padded_mnist`` (IDX files in
  ``data_dir``), ``seq_cifar10`` (CIFAR-10 python pickles in ``data_dir``; a row is 32 pixels × 3
  channels, pixel-major). The data sets and their splits never depend on ``make_task``'s ``seed``,
  so every trial of a study trains and tests on the same examples.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
import random
import struct
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.tasks import ADDING_TOLERANCE, TaskError, TaskSpec, adding_window, task_spec

__all__ = [
    "PythonTask",
    "Task",
    "TaskError",
    "TaskSpec",
    "load_factory",
    "make_task",
    "measure_inputs",
]

# Fixed standardization constants (mean, std of the [0, 1]-scaled pixels).
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760  # sklearn load_digits, all 1797 images
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Task:
    """A task: its spec and a sampler of reproducible batches."""

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed

    @property
    def chance(self) -> float:
        """Accuracy of guessing (see :attr:`TaskSpec.chance`)."""
        return self.spec.chance

    def sample(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(x, y)``: ``x`` float32 ``(seq_len, batch, input_size)``; ``y`` long
        ``(output_steps, batch)`` for ``ce`` tasks, float32 ``(output_steps, batch, 1)`` for
        ``mse``. Identical for generators in identical states."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise TaskError("batch_size", batch_size, "must be a positive integer")
        if not isinstance(generator, torch.Generator):
            raise TaskError("generator", generator, "must be a torch.Generator")
        if split not in ("train", "test"):
            raise TaskError("split", split, "must be 'train' or 'test'")
        return self._sample(int(batch_size), generator, split)

    def _sample(
        self, batch_size: int, generator: torch.Generator, split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def accuracy(self, outputs: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction correct: argmax over classes at each read-out step (``copy``: per symbol);
        for ``adding``, |prediction − target| < 0.04. ``outputs``: (output_steps, batch,
        n_outputs)."""
        s = self.spec
        expected = (s.output_steps, y.shape[1] if y.dim() > 1 else -1, s.n_outputs)
        if tuple(outputs.shape) != expected:
            raise TaskError("outputs", tuple(outputs.shape), f"expected shape {expected}")
        if s.loss == "ce":
            return (outputs.argmax(-1) == y).float().mean().item()
        return ((outputs - y).abs() < ADDING_TOLERANCE).float().mean().item()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, seed={self.seed})"


class CopyTask(Task):
    def _sample(self, batch_size, generator, split):
        n, A, T = self.spec.options["n_symbols"], self.spec.options["alphabet"], self.spec.T
        symbols = torch.randint(A, (n, batch_size), generator=generator)  # (n, B)
        x = torch.zeros(self.spec.seq_len, batch_size, A + 2)  # (L, B, A+2)
        x[:n] = torch.nn.functional.one_hot(symbols, A + 2).float()
        x[n:, :, A] = 1.0  # blanks: the bridge and the recall steps
        x[n + T, :, A] = 0.0
        x[n + T, :, A + 1] = 1.0  # go marker: recall starts here
        return x, symbols


class AddingTask(Task):
    def _sample(self, batch_size, generator, split):
        L, W, B = self.spec.seq_len, adding_window(self.spec.T), batch_size
        values = torch.rand(L, B, generator=generator)  # (L, B)
        first = torch.randint(W, (B,), generator=generator)
        second = torch.randint(W - 1, (B,), generator=generator)
        second = second + (second >= first).long()  # uniform over [0, W) \ {first}
        cols = torch.arange(B)
        markers = torch.zeros(L, B)
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (L, B, 2)
        y = (values[first, cols] + values[second, cols]).reshape(1, B, 1)
        return x, y


def load_factory(factory: str) -> Any:
    """The callable ``module:function`` names (a python task's ``factory``), imported from the
    worker's ``sys.path`` (``PYTHONPATH``); :class:`TaskError` naming ``factory`` otherwise (the
    agent gives such a trial back: the module is missing on this machine, not wrong)."""
    module_name, _, attr = factory.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskError("factory", factory, f"cannot import {module_name!r} here ({e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise TaskError("factory", factory, f"{module_name!r} has no {attr!r}")
    if not callable(obj):
        raise TaskError("factory", factory, "is not callable")
    return obj


class PythonTask(Task):
    """A user's own task (``python``): ``factory(T=T, seed=seed, **args)`` returns an object
    whose ``sample(batch_size, generator, split)`` gives ``(x, y)`` as :meth:`Task.sample`
    describes; every batch's shape is checked against the declared one."""

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        super().__init__(spec, seed)
        make = load_factory(spec.options["factory"])
        try:
            self.user = make(T=spec.T, seed=seed, **spec.options["args"])
        except Exception as e:  # the user's code: say whose it is
            raise TaskError("factory", spec.options["factory"], f"raised {e!r}") from e
        if not callable(getattr(self.user, "sample", None)):
            raise TaskError("factory", spec.options["factory"], "returned no .sample()")

    def _sample(self, batch_size, generator, split):
        x, y = self.user.sample(batch_size, generator, split)
        s = self.spec
        want = (s.seq_len, batch_size, s.input_size)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise TaskError("x", got, f"a batch's inputs must be (prefix + T + suffix, batch, "
                            f"input_size) = {want}")  # fmt: skip
        target = (s.output_steps, batch_size) + ((1,) if s.loss == "mse" else ())
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != target:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise TaskError("y", got, f"a batch's targets must be {target}")
        return x.float(), (y.long() if s.loss == "ce" else y.float())


def measure_inputs(
    task: Task | Any, T: int, prefix: int, batches: int = 8, batch_size: int = 64, seed: int = 0
) -> dict[str, Any]:
    """The bridge statistics the theory needs, measured on sample batches of ``task`` (anything
    with ``sample(batch_size, generator, split)``) over the steps [prefix, prefix + T): R, the
    mean of x² over input coordinates; R_ab, the mean of x^a x^b over pairs of different
    examples; the regime, ``shared`` when different examples see the same bridge inputs, else
    ``independent``. Also the batch's shape (sequence length, inputs per step, read-out steps)
    and the loss its targets call for (class indices: ``ce`` with the largest label seen + 1
    classes; floats of shape (steps, batch, 1): ``mse``)."""
    gen = torch.Generator().manual_seed(seed)
    sq = cross = diff = 0.0
    count, top = 0, -1
    for _ in range(batches):
        x, y = task.sample(batch_size, gen, "train")
        regression = y.is_floating_point() and y.dim() == 3
        top = top if regression else max(top, int(y.max()))
        bridge = x[prefix : prefix + T].double()  # (T, B, D)
        if bridge.shape[0] != T:
            raise TaskError("prefix", prefix, f"the sequences have {x.shape[0]} steps, fewer "
                            f"than prefix + T = {prefix + T}")  # fmt: skip
        a, b = bridge[:, 0::2], bridge[:, 1::2]
        k = min(a.shape[1], b.shape[1])
        sq += float((bridge**2).mean())
        cross += float((a[:, :k] * b[:, :k]).mean())
        diff += float(((a[:, :k] - b[:, :k]) ** 2).mean())
        count += 1
    # E[x^a x^b] is a mean squared for independent examples: a negative estimate is noise
    R, R_ab, spread = sq / count, max(cross / count, 0.0), diff / count
    shared = spread <= 1e-9 * max(R, 1e-12)
    return {
        "seq_len": int(x.shape[0]),
        "input_size": int(x.shape[2]),
        "loss": "mse" if regression else "ce",
        "n_outputs": 1 if regression else top + 1,  # the largest label seen, plus one
        "output_steps": int(y.shape[0]),
        "R": R,
        "regime": "shared" if shared else "independent",
        "R_ab": R_ab,
    }


@dataclass(frozen=True)
class _Arrays:
    """A classification dataset (images or signals, N first); inputs are (x·scale − mean)/std."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scale: float
    mean: np.ndarray | float
    std: np.ndarray | float


class PaddedTask(Task):
    def __init__(self, spec: TaskSpec, seed: int, arrays: _Arrays) -> None:
        super().__init__(spec, seed)
        shape = (spec.seq_len - spec.T, spec.input_size)  # an example's own sequence (S, D)
        self._data = {
            split: (torch.from_numpy(x.reshape(-1, *shape)), torch.from_numpy(y).long())
            for split, x, y in (
                ("train", arrays.x_train, arrays.y_train),
                ("test", arrays.x_test, arrays.y_test),
            )
        }
        self._scale = arrays.scale
        self._mean = torch.as_tensor(arrays.mean, dtype=torch.float32)
        self._std = torch.as_tensor(arrays.std, dtype=torch.float32)

    def _sample(self, batch_size, generator, split):
        xs, ys = self._data[split]
        idx = torch.randint(len(ys), (batch_size,), generator=generator)
        seq = (xs[idx].float() * self._scale - self._mean) / self._std  # (B, S, D)
        seq = seq.transpose(0, 1)  # (S, B, D)
        pad_shape = (self.spec.T, batch_size, self.spec.input_size)
        if self.spec.options["padding"] == "noise":
            pad = torch.randn(pad_shape, generator=generator) * self.spec.options["noise_std"]
        else:
            pad = torch.zeros(pad_shape)
        return torch.cat([seq, pad]), ys[idx].unsqueeze(0)  # (S+T, B, D), (1, B)


def make_task(name: str, T: int, seed: int = 0, **options: Any) -> Task:
    """Build task ``name`` with bridge length ``T``.

    ``seed`` (the run's seed) is only recorded as :attr:`Task.seed`: data sets and splits are fixed,
    and every random draw of a batch comes from the generator passed to :meth:`Task.sample`.

    Raises:
        TaskError: bad name, ``T``, ``seed`` or option, or missing / malformed data files.
    """
    spec = task_spec(name, T, **options)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise TaskError("seed", seed, "must be a non-negative integer")
    if name == "python":
        return PythonTask(spec, int(seed))
    if name == "copy":
        return CopyTask(spec, int(seed))
    if name == "adding":
        return AddingTask(spec, int(seed))
    opts = spec.options
    if name == "padded_digits":
        x_train, y_train, x_test, y_test = _digits()
        arrays = _Arrays(x_train, y_train, x_test, y_test, 1 / 16, DIGITS_MEAN, DIGITS_STD)
    elif name == "mnist1d":
        x_train, y_train, x_test, y_test = _mnist1d(opts["num_samples"])
        arrays = _Arrays(x_train, y_train, x_test, y_test, 1.0, 0.0, 1.0)
    elif name == "padded_mnist":
        x_train, y_train, x_test, y_test = _mnist(_resolve_dir(opts["data_dir"]))
        arrays = _Arrays(x_train, y_train, x_test, y_test, 1 / 255, MNIST_MEAN, MNIST_STD)
    else:  # seq_cifar10: images (N, 32, 32, 3); a row is 32 pixels × 3 channels, pixel-major
        x_train, y_train, x_test, y_test = _cifar10(_resolve_dir(opts["data_dir"]))
        reps = spec.input_size // 3
        mean, std = np.tile(CIFAR_MEAN, reps), np.tile(CIFAR_STD, reps)
        arrays = _Arrays(x_train, y_train, x_test, y_test, 1 / 255, mean, std)
    return PaddedTask(spec, int(seed), arrays)


# --- data readers (numpy only; cached per process) ----------------------------------------------


#: Seeds of the fixed data: the digits' train/test permutation and the MNIST-1D generator.
DIGITS_SPLIT_SEED, MNIST1D_SEED = 0, 42


def _digits_file() -> Path | None:
    """The CSV file scikit-learn's ``load_digits`` reads, found without importing scikit-learn (its
    import costs more CPU than a short trial: every worker process paid it)."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: images (1797, 8, 8) with values 0..16, and labels; the
    same arrays as ``load_digits()``'s ``images`` and ``target`` (tests/test_tasks.py checks)."""
    path = _digits_file()
    if path is None:  # an unusual install: let scikit-learn find its own file
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, ...]:
    images, target = digits_arrays()
    x = images.astype(np.float32)  # (1797, 8, 8), values 0..16
    y = target.astype(np.int64)
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    n_test = round(0.2 * len(y))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


@functools.lru_cache(maxsize=2)
def _mnist1d(num_samples: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, MNIST1D_SEED
    # make_dataset reseeds the global `random` and numpy generators: leave them as they were.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        data = make_dataset(args)  # already centred and scaled to unit std; never downloads
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return tuple(
        np.ascontiguousarray(data[key], dtype=dtype)
        for key, dtype in (("x", np.float32), ("y", np.int64), ("x_test", np.float32),
                           ("y_test", np.int64))
    )  # fmt: skip


def _resolve_dir(data_dir: str) -> Path:
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise TaskError("data_dir", data_dir, "no such directory")
    return path.resolve()


def _find(
    roots: list[Path], names: list[str], what: str, data_dir: Path, gz: bool = False
) -> dict[str, Path]:
    """Locate every file of ``names`` (also as ``.gz`` if ``gz``) in the first root holding all."""
    forms = (".gz", "") if gz else ("",)
    for root in roots:
        found = {n: root / (n + e) for n in names for e in forms if (root / (n + e)).is_file()}
        if len(found) == len(names):
            return found
    anywhere = {n for r in roots for n in names for e in forms if (r / (n + e)).is_file()}
    shown = [n + ("[.gz]" if gz else "") for n in names if n not in anywhere]
    if shown:
        raise TaskError("data_dir", str(data_dir), f"no {what} files {', '.join(shown)} found")
    where = " or ".join(map(str, roots))
    raise TaskError("data_dir", str(data_dir), f"the {what} files are not all in one of {where}")


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx(path: Path, data_dir: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): magic 0x0000 08 ndim, then ndim
    big-endian uint32 sizes, then the data."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TaskError("data_dir", str(data_dir), f"{path.name}: not an IDX file of ubytes")
    ndim, header = raw[3], 4 + 4 * raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise TaskError("data_dir", str(data_dir), f"{path.name}: truncated IDX file {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


@functools.lru_cache(maxsize=2)
def _mnist(data_dir: Path) -> tuple[np.ndarray, ...]:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]  # fmt: skip
    files = _find([data_dir, data_dir / "MNIST" / "raw"], stems, "MNIST", data_dir, gz=True)
    x_train, y_train, x_test, y_test = (_read_idx(files[s], data_dir) for s in stems)
    for x, y, stem in ((x_train, y_train, stems[0]), (x_test, y_test, stems[2])):
        if x.shape[1:] != (28, 28) or len(x) != len(y) or y.ndim != 1:
            reason = f"{stem}: images {x.shape} and labels {y.shape} are not N×28×28 and N"
            raise TaskError("data_dir", str(data_dir), reason)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch (a dict of bytes, a numpy array and a list) and nothing else."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with _open(path) as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)  # (N, C, H, W)
        y = np.asarray(labels, dtype=np.int64)
    except Exception as exc:  # any malformed file is the same user error
        reason = f"{path.name}: not a CIFAR-10 python batch ({exc})"
        raise TaskError("data_dir", str(data_dir), reason) from exc
    if len(x) != len(y):
        reason = f"{path.name}: {len(x)} images but {len(y)} labels"
        raise TaskError("data_dir", str(data_dir), reason)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y  # (N, H, W, C)


@functools.lru_cache(maxsize=2)
def _cifar10(data_dir: Path) -> tuple[np.ndarray, ...]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    files = _find([data_dir, data_dir / "cifar-10-batches-py"], names, "CIFAR-10", data_dir)
    train = [_read_cifar_batch(files[n], data_dir) for n in names[:5]]
    x_test, y_test = _read_cifar_batch(files["test_batch"], data_dir)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test
