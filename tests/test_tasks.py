"""The long-memory tasks: reproducible batches, shapes, and bridge statistics that match the spec
the theory is given (docs/theory.md, "Inputs"). Dataset readers run on tiny files written in the
real formats (IDX for MNIST, python pickles for CIFAR-10)."""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.tasks import ADDING_TOLERANCE, TASKS, TaskError, adding_window, task_spec
from workers import tasks as tasks_module
from workers.tasks import Task, make_task

# --- fixtures in the real file formats ----------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """LeCun's IDX format: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 sizes."""
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw += array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def write_mnist(root: Path, n_train: int = 10, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    data = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", data["x_train"])  # one gzipped, as downloaded
    write_idx(root / "train-labels-idx1-ubyte", data["y_train"])
    write_idx(root / "t10k-images-idx3-ubyte", data["x_test"])
    write_idx(root / "t10k-labels-idx1-ubyte", data["y_test"])
    return data


def write_cifar(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, np.ndarray]:
    """CIFAR-10 "python version": pickled dicts with b"data" (N, 3072) uint8, R then G then B planes
    of 32×32 row-major, and b"labels" a list of ints."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x}, f, protocol=2)
        xs.append(x)
        ys.append(np.array(y))
    return {
        "x_train": np.concatenate(xs[:5]),
        "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5],
        "y_test": ys[5],
    }


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    base = tmp_path_factory.mktemp("data")
    mnist = write_mnist(base / "mnist")
    cifar = write_cifar(base / "cifar" / "cifar-10-batches-py")  # the tarball's subfolder
    return {"padded_mnist": (base / "mnist", mnist), "seq_cifar10": (base / "cifar", cifar)}


# Small variants of every task; ids name them.
VARIANTS = [
    ("copy", {}),
    ("copy", {"n_symbols": 3, "alphabet": 4}),
    ("adding", {}),
    ("padded_digits", {}),
    ("padded_digits", {"mode": "pixels", "padding": "noise", "noise_std": 0.5}),
    ("mnist1d", {"num_samples": 200}),
    ("mnist1d", {"num_samples": 200, "padding": "noise"}),
    ("padded_mnist", {}),
    ("padded_mnist", {"mode": "pixels", "padding": "noise", "noise_std": 2.0}),
    ("seq_cifar10", {}),
    ("seq_cifar10", {"mode": "pixels", "padding": "noise"}),
]
IDS = [name + "".join(f"-{v}" for v in opts.values()) for name, opts in VARIANTS]


def build(name: str, T: int, opts: dict, data_dirs: dict) -> Task:
    if name in data_dirs:
        opts = {**opts, "data_dir": str(data_dirs[name][0])}
    return make_task(name, T, **opts)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bridge(task: Task) -> slice:
    """The bridge steps: copy's blanks between the symbols and the go marker; otherwise the last T
    steps (the adding task's after its marker window, the datasets' padding)."""
    s = task.spec
    if s.name == "copy":
        n = s.options["n_symbols"]
        return slice(n, n + s.T)
    return slice(s.seq_len - s.T, s.seq_len)


# --- reproducibility, shapes, spec ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=IDS)
def test_batches_reproducible_from_seed(name: str, opts: dict, data_dirs: dict) -> None:
    task = build(name, 7, opts, data_dirs)
    x1, y1 = task.sample(16, gen(3))
    x2, y2 = task.sample(16, gen(3))
    x3, y3 = task.sample(16, gen(4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not (torch.equal(x1, x3) and torch.equal(y1, y3))


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=IDS)
def test_shapes_and_labels(name: str, opts: dict, split: str, data_dirs: dict) -> None:
    T, B = 5, 12
    task = build(name, T, opts, data_dirs)
    s = task.spec
    assert s == build(name, T, opts, data_dirs).spec  # the spec is a pure function of the inputs
    assert s.T == T and s.name == name and s.options.items() >= opts.items()
    x, y = task.sample(B, gen(0), split=split)
    assert x.dtype == torch.float32 and x.shape == (s.seq_len, B, s.input_size)
    assert torch.isfinite(x).all()
    if s.loss == "ce":
        assert y.dtype == torch.int64 and y.shape == (s.output_steps, B)
        assert 0 <= y.min() and y.max() < s.n_outputs
    else:
        assert y.dtype == torch.float32 and y.shape == (s.output_steps, B, 1)
    outputs = torch.zeros(s.output_steps, B, s.n_outputs)
    assert 0.0 <= task.accuracy(outputs, y) <= 1.0
    assert 0.0 < task.chance < 1.0


def test_spec_numbers_for_T_100() -> None:
    d = {"data_dir": "/data"}
    expected = {  # name: (input_size, n_outputs, loss, output_steps, seq_len, R, R_ab, regime)
        "copy": (10, 8, "ce", 5, 110, 0.1, 0.1, "shared"),
        "adding": (2, 1, "mse", 1, 111, 1 / 6, 1 / 8, "independent"),
        "padded_digits": (8, 10, "ce", 1, 108, 0.0, 0.0, "shared"),
        "mnist1d": (1, 10, "ce", 1, 140, 0.0, 0.0, "shared"),
        "padded_mnist": (28, 10, "ce", 1, 128, 0.0, 0.0, "shared"),
        "seq_cifar10": (96, 10, "ce", 1, 132, 0.0, 0.0, "shared"),
        "python": (3, 2, "mse", 2, 107, 0.5, 0.25, "shared"),
    }
    own = {
        "factory": "m:f",
        "input_size": 3,
        "n_outputs": 2,
        "loss": "mse",
        "output_steps": 2,
        "prefix": 4,
        "suffix": 3,
        "R": 0.5,
        "R_ab": 0.25,
        "regime": "shared",
        "chance": 0.3,
    }
    options = {"padded_mnist": d, "seq_cifar10": d, "python": own}  # fmt: skip
    assert set(expected) == set(TASKS)
    for name, row in expected.items():
        s = task_spec(name, 100, **options.get(name, {}))
        got = (s.input_size, s.n_outputs, s.loss, s.output_steps, s.seq_len, s.R, s.R_ab, s.regime)
        assert got == pytest.approx(row), name
    noisy = task_spec("padded_mnist", 100, mode="pixels", padding="noise", noise_std=0.5, **d)
    assert (noisy.seq_len, noisy.input_size, noisy.R, noisy.R_ab, noisy.regime) == (
        884, 1, 0.25, 0.0, "independent",
    )  # fmt: skip
    assert task_spec("copy", 100, n_symbols=10, alphabet=3).seq_len == 120
    assert task_spec("adding", 100).chance == pytest.approx(2 * 0.04 - 0.04**2)
    assert task_spec("python", 100, **own).chance == 0.3  # a python task's own


@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=IDS)
def test_bridge_statistics_match_spec(name: str, opts: dict, data_dirs: dict) -> None:
    """Empirical R = mean x² over the bridge, cross-moment R_ab = mean x^a x^b over pairs of
    different examples, and the regime (identical vs independent bridge inputs)."""
    T, B = 40, 256
    task = build(name, T, opts, data_dirs)
    s = task.spec
    x, _ = task.sample(B, gen(5))
    xb = x[bridge(task)].double()  # (T, B, D)
    tol = 5 / xb.numel() ** 0.5  # five standard errors of a mean of O(1)-variance terms
    assert xb.pow(2).mean().item() == pytest.approx(s.R, rel=2 * tol, abs=1e-12)
    cross = (xb[:, :-1] * xb[:, 1:]).mean().item()  # examples b and b+1
    assert cross == pytest.approx(s.R_ab, abs=s.R * tol + 1e-12)
    if s.regime == "shared":
        assert torch.equal(xb, xb[:, :1].expand_as(xb))
    else:
        centred = xb - xb.mean(dim=1, keepdim=True)
        corr = (centred[:, :-1] * centred[:, 1:]).mean() / centred.pow(2).mean()
        assert abs(corr.item()) < tol


def test_dataset_inputs_are_standardized(data_dirs: dict) -> None:
    """The information part of a padded sequence has unit scale (fixed-constant standardization),
    the same scale as noise padding with noise_std 1."""
    for name, opts in [("padded_digits", {}), ("mnist1d", {"num_samples": 200})]:
        task = build(name, 3, opts, data_dirs)
        x, _ = task.sample(512, gen(0))
        info = x[: task.spec.seq_len - 3]
        assert info.mean().item() == pytest.approx(0.0, abs=0.1)
        assert info.std().item() == pytest.approx(1.0, abs=0.1)


# --- the synthetic tasks are solvable by construction ---------------------------------------------


def test_copy_targets_are_the_first_symbols() -> None:
    task = make_task("copy", 9, n_symbols=4, alphabet=6)
    n, A, T, L = 4, 6, 9, task.spec.seq_len
    assert L == 2 * n + T
    x, y = task.sample(64, gen(1))
    assert torch.equal(x.sum(-1), torch.ones(L, 64))  # one-hot at every step
    assert torch.equal(x[:n].argmax(-1), y)  # the targets are the first n inputs
    assert (x[:n, :, A:] == 0).all()  # no blank or go among the symbols
    assert (x[n : n + T, :, A] == 1).all()  # the bridge is blank
    assert (x[n + T, :, A + 1] == 1).all() and (x[:, :, A + 1].sum(0) == 1).all()  # one go
    assert (x[n + T + 1 :, :, A] == 1).all()
    oracle = torch.nn.functional.one_hot(x[:n].argmax(-1), A).float()  # (n, B, A)
    assert task.accuracy(oracle, y) == 1.0
    wrong = torch.nn.functional.one_hot((y + 1) % A, A).float()
    assert task.accuracy(wrong, y) == 0.0
    assert task.chance == pytest.approx(1 / A)


@pytest.mark.parametrize("T", [1, 17, 100])
def test_adding_targets_are_the_marked_sum(T: int) -> None:
    task = make_task("adding", T)
    W, L = adding_window(T), task.spec.seq_len
    assert L == W + T and W >= 2 and (T < 18 or W / L <= 0.1)
    x, y = task.sample(512, gen(2))
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert torch.equal(markers.sum(0), torch.full((512,), 2.0))  # two distinct marked steps
    assert (markers[W:] == 0).all()  # both in the first W steps: the answer lies >= T steps back
    assert torch.allclose(y[0, :, 0], (values * markers).sum(0))
    assert ((y >= 0) & (y <= 2)).all()
    assert task.accuracy(y, y) == 1.0
    assert task.accuracy(y + 0.9 * ADDING_TOLERANCE, y) == 1.0
    assert task.accuracy(y + 1.1 * ADDING_TOLERANCE, y) == 0.0


def test_adding_chance_is_guessing_the_mean() -> None:
    task = make_task("adding", 10)
    _, y = task.sample(20_000, gen(3))
    assert task.accuracy(torch.ones_like(y), y) == pytest.approx(task.chance, abs=0.01)
    assert ((y - 1) ** 2).mean().item() == pytest.approx(task.spec.baseline_loss, rel=0.05)


# --- dataset readers and splits -------------------------------------------------------------------


def test_digits_are_read_as_scikit_learn_loads_them() -> None:
    """The digits are read from scikit-learn's own file without importing scikit-learn; the arrays
    are exactly ``load_digits()``'s."""
    from sklearn.datasets import load_digits

    assert tasks_module._digits_file() is not None
    images, target = tasks_module.digits_arrays()
    digits = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, digits.images)
    assert np.array_equal(target, digits.target)


def test_digits_and_mnist1d_splits_are_disjoint_and_fixed() -> None:
    x_train, y_train, x_test, y_test = tasks_module._digits()
    assert (len(y_train), len(y_test)) == (1438, 359)
    assert x_train.shape[1:] == (8, 8) and set(np.unique(y_test)) == set(range(10))
    train_rows = {r.tobytes() for r in x_train}
    assert not any(r.tobytes() in train_rows for r in x_test)
    x_train, y_train, x_test, _ = tasks_module._mnist1d(200)
    assert (len(x_train), len(x_test)) == (160, 40) and x_train.shape[1] == 40
    assert not {r.tobytes() for r in x_train} & {r.tobytes() for r in x_test}
    # the run seed does not change the data: same test examples for every trial of a study
    a, b = make_task("padded_digits", 2, seed=0), make_task("padded_digits", 2, seed=9)
    assert torch.equal(a.sample(8, gen(0), "test")[0], b.sample(8, gen(0), "test")[0])


def test_mnist1d_leaves_global_rngs_alone() -> None:
    tasks_module._mnist1d.cache_clear()
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    make_task("mnist1d", 2, num_samples=100)
    assert np.random.random() == expected  # noqa: NPY002


def _images(task: Task, split: str, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's images as the task should present them: (N, S, D) standardized."""
    m = tasks_module
    x = torch.from_numpy(data[f"x_{split}"].astype(np.float32)) / 255
    if task.spec.name == "padded_mnist":
        x = (x - m.MNIST_MEAN) / m.MNIST_STD
    else:  # (N, 3072) planes → (N, 32, 32, 3): a row is 32 pixels × (R, G, B)
        x = x.reshape(-1, 3, 32, 32).permute(0, 2, 3, 1)
        x = (x - torch.tensor(m.CIFAR_MEAN)) / torch.tensor(m.CIFAR_STD)
    steps = task.spec.seq_len - task.spec.T
    return x.reshape(len(x), steps, task.spec.input_size), torch.from_numpy(
        data[f"y_{split}"].astype(np.int64)
    )


@pytest.mark.parametrize("mode", ["rows", "pixels"])
@pytest.mark.parametrize("name", ["padded_mnist", "seq_cifar10"])
def test_file_datasets_present_the_fixture_images(name: str, mode: str, data_dirs: dict) -> None:
    root, data = data_dirs[name]
    task = make_task(name, 3, data_dir=str(root), mode=mode)
    for split in ("train", "test"):
        images, labels = _images(task, split, data)
        x, y = task.sample(20, gen(7), split=split)
        seen = set()
        for b in range(20):
            seq = x[: -task.spec.T, b]  # (S, D)
            match = [i for i in range(len(images)) if torch.allclose(images[i], seq, atol=1e-5)]
            assert len(match) == 1 and labels[match[0]] == y[0, b]
            seen.add(match[0])
            assert (x[-task.spec.T :, b] == 0).all()
        assert len(seen) > 1


def test_missing_or_malformed_data_gives_clear_errors(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(TaskError, match=r"data_dir=.*nowhere.*no such directory") as err:
        make_task("padded_mnist", 5, data_dir=str(nowhere))
    assert err.value.field == "data_dir"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskError, match=r"no MNIST files train-images-idx3-ubyte\[\.gz\]"):
        make_task("padded_mnist", 5, data_dir=empty)
    with pytest.raises(TaskError, match=r"no CIFAR-10 files data_batch_1, .*test_batch found"):
        make_task("seq_cifar10", 5, data_dir=str(empty))
    with pytest.raises(TaskError, match="data_dir=None: required option") as err:
        make_task("seq_cifar10", 5)
    assert err.value.field == "data_dir"
    with pytest.raises(TaskError, match="data_dir"):
        task_spec("padded_mnist", 5)  # required for the spec too

    bad = tmp_path / "bad"
    write_mnist(bad)
    (bad / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09\x01")
    with pytest.raises(TaskError, match="t10k-labels-idx1-ubyte: truncated IDX"):
        make_task("padded_mnist", 5, data_dir=str(bad))

    evil = tmp_path / "evil"
    write_cifar(evil)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))
    (evil / "test_batch").write_bytes(payload)
    with pytest.raises(TaskError, match="test_batch: not a CIFAR-10 python batch"):
        make_task("seq_cifar10", 5, data_dir=str(evil))
    assert not marker.exists()  # the restricted unpickler refused to call anything


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda: task_spec("nope", 10), "name", "name='nope': unknown task; known: copy"),
        (lambda: task_spec("copy", 0), "T", "T=0: must be a positive integer"),
        (lambda: task_spec("copy", -3), "T", "T=-3: must be a positive integer"),
        (lambda: task_spec("copy", 2.5), "T", "T=2.5: must be a positive integer"),
        (lambda: task_spec("copy", True), "T", "T=True"),
        (lambda: task_spec("copy", 10, colour=1), "colour", "colour=1: unknown option"),
        (lambda: task_spec("adding", 10, mode="rows"), "mode", "known: none"),
        (lambda: task_spec("copy", 10, n_symbols=0), "n_symbols", "n_symbols=0: must be"),
        (lambda: task_spec("copy", 10, alphabet=1), "alphabet", "alphabet=1"),
        (lambda: task_spec("padded_digits", 10, mode="cols"), "mode", "mode='cols'"),
        (lambda: task_spec("mnist1d", 10, padding="ones"), "padding", "padding='ones'"),
        (lambda: task_spec("mnist1d", 10, noise_std=0), "noise_std", "noise_std=0"),
        (lambda: task_spec("mnist1d", 10, num_samples=5), "num_samples", "num_samples=5"),
        (lambda: make_task("copy", 10, seed=-1), "seed", "seed=-1"),
        (lambda: make_task("copy", 0), "T", "T=0"),
        (lambda: make_task("copy", 3).sample(0, gen(0)), "batch_size", "batch_size=0"),
        (lambda: make_task("copy", 3).sample(2, gen(0), split="val"), "split", "split='val'"),
        (lambda: make_task("copy", 3).sample(2, 0), "generator", "torch.Generator"),
    ],
)
def test_bad_inputs_name_field_and_value(call, field: str, message: str) -> None:
    with pytest.raises(TaskError) as err:
        call()
    assert err.value.field == field
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_accuracy_checks_the_output_shape() -> None:
    task = make_task("copy", 3)
    _, y = task.sample(4, gen(0))
    with pytest.raises(TaskError, match="outputs"):
        task.accuracy(torch.zeros(1, 4, 8), y)


def test_taskspec_imports_without_torch() -> None:
    code = (
        "import sys, contract.tasks as t; t.task_spec('copy', 5);"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_python_task_errors_name_the_factory_and_the_shape(tmp_path: Path, monkeypatch) -> None:
    """A python task: the factory that cannot be imported (given back by a worker: a machine
    without the module), one that is not there, and a batch of the wrong shape, each named."""
    from workers.agent import _environment

    (tmp_path / "badtasks.py").write_text(
        "import torch\n"
        "class Short:\n"
        "    def sample(self, batch_size, generator, split):\n"
        "        return torch.zeros(3, batch_size, 2), torch.zeros(1, batch_size).long()\n"
        "def make(T, seed):\n"
        "    return Short()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    opts = {"input_size": 2, "n_outputs": 2, "R": 0.0, "regime": "shared", "prefix": 1}
    with pytest.raises(TaskError) as missing:
        make_task("python", 5, factory="nosuchmodule:make", **opts)
    assert missing.value.field == "factory" and _environment(missing.value)
    with pytest.raises(TaskError, match="has no 'nope'") as absent:
        make_task("python", 5, factory="badtasks:nope", **opts)
    assert not _environment(absent.value)
    task = make_task("python", 5, factory="badtasks:make", **opts)
    with pytest.raises(TaskError, match=r"\(6, 4, 2\)") as shape:
        task.sample(4, gen(0))
    assert shape.value.field == "x" and shape.value.value == (3, 4, 2)
