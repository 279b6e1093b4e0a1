"""Killed runs resume, damaged caches heal, concurrent runs share a cache, bad input never tracebacks."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.models import ZOO, create_model
from archsim.models.zoo import zoo_key
from archsim.tests.cli_runner import run_cli

MODELS = "zoo:resnet-s0 zoo:resnet-s1 zoo:convnext"
SMALL = ["--models", MODELS, "--n-images", "60", "--steps", "10", "--rel-step", "0.3", "--n-boot", "100"]


def archsim_process(cache: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "archsim.cli", "run", *SMALL, *extra, "--cache", str(cache), "--out", str(out)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A shell's background job ignores Ctrl-C, and so would its children: Python turns SIGINT into KeyboardInterrupt
        # only if not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def entries(cache: Path, kind: str) -> int:
    return len(list((cache / kind).glob("*/*.bin"))) if (cache / kind).is_dir() else 0


def descendants(pid: int) -> list[int]:
    """Processes started by ``pid``, their children, and so on (Linux's /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # ended meanwhile
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (ended, not yet reaped by a container's init) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def kill_when(process: subprocess.Popen, condition, timeout: float = 300, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``process`` as soon as ``condition()`` holds and wait for its end; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(sig)
            process.wait()
            return True
        time.sleep(0.05)
    process.kill()
    raise AssertionError("stage never reached")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the training workers in Linux's /proc")
def test_killed_run_resumes_to_the_same_matrix(tmp_path, cache_dir, capsys):
    cache, out = tmp_path / "cache", tmp_path / "run"
    # convnext's weights from the session cache, so that only the two ResNets train (side by side) before the attacks.
    convnext = zoo_key(ZOO["convnext"], load_data("digits", split="train"))
    create_model("zoo:convnext", cache=CacheStore(cache_dir))
    CacheStore(cache).put("zoo", convnext, CacheStore(cache_dir).get("zoo", convnext))
    # Killed while both ResNets train in worker processes: the workers end with the run, not after it.
    run = archsim_process(cache, out)
    workers: list[int] = []

    def training() -> bool:
        workers[:] = descendants(run.pid)
        return len(list((cache / "zoo").glob("*/*.lock"))) == 2 and entries(cache, "zoo") == 1

    assert kill_when(run, training), "the run ended before its zoo models trained"
    assert len(workers) >= 3, workers  # two trainers, their fork server (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 10
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120] for pid in workers if alive(pid)]
    assert not left, f"processes outlived their killed run: {left}"
    # Ctrl-C during the attacks, SIGKILL during the evaluation.
    stages = {
        "attacks": (lambda: entries(cache, "adv") >= 1, signal.SIGINT),
        "evaluation": (
            lambda: entries(cache, "pred") >= 3 + 2,
            signal.SIGKILL,
        ),  # 3 clean predictions, then adversarial ones
    }
    killed = []
    for stage, (condition, sig) in stages.items():
        process = archsim_process(cache, out)
        if kill_when(process, condition, sig=sig):
            killed.append(stage)
        if sig == signal.SIGINT:
            said = process.stdout.read().splitlines()
            assert process.returncode == 130 and said[-1].startswith(
                "interrupted; what was computed is in the cache"
            ), said
    assert killed == list(stages), killed
    # SIGKILL may fall inside a write (evaluation writes each group's predictions of a set one after another): its
    # temporary file is no entry (readers see whole files or none), and the rerun that writes the entry removes it.
    store = CacheStore(cache)
    assert all(store.get(e["kind"], e["key"]) is not None for e in store.entries() if e["kind"] == "pred"), (
        "a half-written entry"
    )
    # The rerun that finishes, and one after a kill while writing the outputs (atomic writes leave whole files,
    # config.json, written last, missing); in this process: nothing is killed any more, and a process costs seconds.
    code, stdout, _ = run_cli(capsys, "run", *SMALL, "--cache", str(cache), "--out", str(out))
    assert code == 0, stdout
    assert not list(cache.rglob("*.tmp")), "a killed write's temporary file outlived the rerun that wrote its entry"
    (out / "config.json").unlink()
    (out / "report.html").unlink()
    code, stdout, _ = run_cli(capsys, "run", *SMALL, "--cache", str(cache), "--out", str(out))
    assert code == 0, stdout
    assert (out / "config.json").is_file() and (out / "report.html").is_file()

    # The uninterrupted reference, in this process: a fresh cache that only shares the (deterministic) trained weights.
    reference_cache, reference_out = tmp_path / "ref-cache", tmp_path / "ref"
    shutil.copytree(cache / "zoo", reference_cache / "zoo")
    code, stdout, _ = run_cli(capsys, "run", *SMALL, "--cache", str(reference_cache), "--out", str(reference_out))
    assert code == 0, stdout
    assert (out / "sat.csv").read_bytes() == (reference_out / "sat.csv").read_bytes()
    assert (out / "pairs.csv").read_bytes() == (reference_out / "pairs.csv").read_bytes()


def test_damaged_entries_are_reported_and_recomputed(tmp_path, cache_dir, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    code, _, err = run_cli(capsys, "run", *SMALL, "--cache", str(cache_dir), "--out", str(first))
    assert code == 0, err
    used = [line for line in (first / "cache_entries.txt").read_text().split() if line.startswith(("adv/", "pred/"))]
    paths = [cache_dir / kind / key[:2] / f"{key}.bin" for kind, key in (u.split("/") for u in (used[0], used[-1]))]
    data = bytearray(paths[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths[0].write_bytes(bytes(data))
    paths[1].write_bytes(paths[1].read_bytes()[:40])
    with pytest.warns(UserWarning, match="damaged") as caught:
        code, stdout, err = run_cli(capsys, "run", *SMALL, "--cache", str(cache_dir), "--out", str(second))
    assert code == 0, err
    assert len([w for w in caught if "damaged" in str(w.message)]) == 2  # each reported once
    assert "2 computed" in stdout
    assert (first / "sat.csv").read_bytes() == (second / "sat.csv").read_bytes()


@pytest.mark.slow
def test_concurrent_runs_share_one_cache(tmp_path, cache_dir, capsys):
    code, _, err = run_cli(capsys, "run", *SMALL, "--cache", str(cache_dir), "--out", str(tmp_path / "warm"))
    assert code == 0, err  # zoo weights trained; the concurrent runs below share only those
    shared = tmp_path / "shared"
    shutil.copytree(cache_dir / "zoo", shared / "zoo")
    one = archsim_process(shared, tmp_path / "one")
    two = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archsim.cli",
            "run",
            "--models",
            "zoo:resnet-s1 zoo:convnext zoo:resnet-s0",
            *SMALL[2:],
            "--cache",
            str(shared),
            "--out",
            str(tmp_path / "two"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert one.wait() == 0, one.stdout.read()
    assert two.wait() == 0, two.stdout.read()
    a = pd.read_csv(tmp_path / "one" / "sat.csv", index_col=0)
    b = pd.read_csv(tmp_path / "two" / "sat.csv", index_col=0).loc[a.index, a.columns]
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    alone = pd.read_csv(tmp_path / "warm" / "sat.csv", index_col=0)
    assert np.array_equal(a.to_numpy(), alone.to_numpy())
    assert not list(shared.rglob("*.tmp"))
    store = CacheStore(shared)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged entry warns as it is removed
        for entry in store.entries():  # every shared entry whole and checksummed
            assert store.get(entry["kind"], entry["key"]) is not None, entry["path"]


def test_cache_commands(tmp_path, cache_dir, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", *SMALL, "--cache", str(cache_dir), "--out", str(run_dir))
    assert code == 0, err
    code, stdout, _ = run_cli(capsys, "cache", "list", "--cache", str(cache_dir))
    header, *kinds, total = stdout.splitlines()
    assert code == 0 and header.split() == ["kind", "entries", "MiB", "oldest_use", "newest_use"], stdout
    assert {"adv", "zoo", "pred"} <= {line.split()[0] for line in kinds} and total.endswith(" MiB")
    assert sum(int(line.split()[1]) for line in kinds) == int(total.split(": ")[1].split()[0])
    scratch = tmp_path / "scratch"
    shutil.copytree(cache_dir, scratch)
    listed = (run_dir / "cache_entries.txt").read_text().split()
    code, stdout, _ = run_cli(capsys, "cache", "prune", "--run", str(run_dir), "--cache", str(scratch), "--dry-run")
    assert code == 0 and f"would remove {len(listed)} entries" in stdout
    code, stdout, _ = run_cli(capsys, "cache", "prune", "--run", str(run_dir), "--cache", str(scratch))
    assert code == 0
    assert not any(
        (scratch / kind / key[:2] / f"{key}.bin").exists() for kind, key in (line.split("/") for line in listed)
    )
    code, stdout, _ = run_cli(capsys, "cache", "prune", "--older-than", "0", "--cache", str(scratch))
    assert code == 0 and entries(scratch, "adv") == 0 and entries(scratch, "zoo") == 0
    for args, message in (
        (["prune", "--cache", str(scratch)], "exactly one of"),
        (["prune", "--run", str(tmp_path)], "no cache_entries.txt"),
        (["prune", "--older-than", "-1", "--cache", str(scratch)], "0 or more days"),
    ):
        code, _, err = run_cli(capsys, "cache", *args)
        assert code == 2 and message in err and err.count("\n") == 1


OPTION_VALUES = {
    "--eps": st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=5)),
    "--steps": st.one_of(st.integers(-5, 0).map(str), st.text(max_size=5)),
    "--n-images": st.one_of(st.integers(-3, 0).map(str), st.text(max_size=4)),
    "--models": st.one_of(
        st.text(max_size=30),
        st.sampled_from(["zoo:nope", "timm:", "file:/nonexistent.pt", "bogus:x,y", "zoo:resnet-s0,"]),
    ),
    "--attack": st.one_of(
        st.text(max_size=12), st.sampled_from(["pgd,steps=", "fgsm,eps", "apgd-ce,rho=x", "lowfreq-pgd,ratio=-1"])
    ),
    "--data": st.sampled_from(["imagefolder:/nowhere", "npz:/nope.npz", "imagenet-val:", "mnist", ""]),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(sorted(OPTION_VALUES)), data=st.data())
def test_fuzzed_run_arguments_never_traceback(option, data, tmp_path_factory, capsys):
    value = data.draw(OPTION_VALUES[option])
    base = {"--models": "zoo:nope zoo:nope2"}  # keeps any accidentally valid value from starting a real run
    args = ["run", "--n-images", "20", "--steps", "1", option, value]
    if option != "--models":
        args += ["--models", base["--models"]]
    out = tmp_path_factory.mktemp("fuzz")
    code, stdout, err = run_cli(capsys, *args, "--cache", str(out / "cache"), "--out", str(out / "run"))
    assert code == 2, (args, stdout, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (args, err)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.lists(
            st.lists(
                st.one_of(st.floats(-1, 5).map(lambda v: f"{v:.3f}"), st.text(max_size=4)), min_size=1, max_size=5
            ),
            min_size=1,
            max_size=5,
        ).map(lambda rows: "\n".join(",".join(r) for r in rows)),
    )
)
def test_fuzzed_csv_files_never_traceback(text, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("csv")
    matrix, cards = folder / "m.csv", folder / "c.csv"
    matrix.write_text(text)
    cards.write_text(text)
    code, _, err = run_cli(
        capsys, "analyze", "--matrix", str(matrix), "--cards", str(cards), "--out", str(folder / "out")
    )
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (text, err)


NUMBERS = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "2", "1.5", "auto", "x"]),
)
NAMES = st.one_of(
    st.text(max_size=12), st.sampled_from(["../../escaped", "a/b", "", " ", ".", "..", "a\\b", "NAME", "x" * 200])
)


def _matrix_files(folder: Path) -> tuple[Path, Path]:
    names = [f"m{i}" for i in range(6)]
    values = np.full((6, 6), 1.0)
    values[:3, :3] = values[3:, 3:] = 3.5
    np.fill_diagonal(values, 4.6)
    pd.DataFrame(values, index=names, columns=names).to_csv(folder / "m.csv")
    cards = pd.DataFrame({"Base architecture": ["CNN"] * 3 + ["Transformer"] * 3}, index=pd.Index(names, name="Model"))
    cards.to_csv(folder / "c.csv")
    return folder / "m.csv", folder / "c.csv"


def _files_outside(folder: Path, allowed: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in allowed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.sampled_from(
        [
            ("analyze", "--clusters"),
            ("analyze", "--seed"),
            ("select", "--k"),
            ("select", "--exponent"),
            ("select", "--draws"),
            ("select", "--seed"),
            ("run", "--n-boot"),
            ("run", "--max-resident"),
            ("run", "--attack-seeds"),
            ("run", "--batch-size"),
            ("run", "--seed"),
            ("cache", "--older-than"),
        ]
    ),
    data=st.data(),
)
def test_fuzzed_numbers_of_every_command_never_traceback_nor_write_elsewhere(
    case, data, tmp_path_factory, monkeypatch, capsys
):
    """Any value of a numeric option: exit 0 (a value that happens to be valid) or 2 with one line on stderr, never a
    traceback, and nothing written outside --out (the folder the command runs in stays as it was)."""
    command, option = case
    value = data.draw(NUMBERS)
    folder = tmp_path_factory.mktemp("fuzz")
    matrix, cards = _matrix_files(folder)
    monkeypatch.chdir(folder)
    args = {
        "analyze": ["analyze", "--matrix", str(matrix), "--cards", str(cards), "--out", "out"],
        "select": ["select", "--matrix", str(matrix), "--k", "2", "--draws", "5"],
        "run": ["run", "--models", "zoo:nope zoo:nope2", "--out", "out", "--cache", "cache"],  # refused before any work
        "cache": ["cache", "prune", "--cache", "cache", "--dry-run"],
    }[command]
    code, _, err = run_cli(capsys, *args, option, value)
    assert code in (0, 2) and "Traceback" not in err, (command, option, value, err)
    assert code == 0 or (err.startswith("error: ") and err.count("\n") == 1), (command, option, value, err)
    assert _files_outside(folder, {"m.csv", "c.csv", "out", "cache"}) == [], (command, option, value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, command=st.sampled_from(["run", "cards"]))
def test_fuzzed_model_names_never_escape_the_output_folder(name, command, tmp_path_factory, monkeypatch, capsys):
    folder = tmp_path_factory.mktemp("names")
    monkeypatch.chdir(folder)
    spec = f"zoo:nope,name={name}"  # an unknown zoo model: even a valid name starts no work
    args = {
        "run": ["run", "--models", f"{spec} zoo:nope2", "--out", "out", "--cache", "cache"],
        "cards": ["cards", spec, "--out", "out/cards.csv", "--cache", "cache"],
    }[command]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
    assert _files_outside(folder, {"out", "cache"}) == [] and not (folder.parent / "escaped").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    labels=st.one_of(
        st.lists(st.integers(-(2**62), 2**62), min_size=3, max_size=3).map(np.array),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3).map(np.array),
        st.lists(st.text(max_size=3), min_size=3, max_size=3).map(np.array),
        st.lists(st.booleans(), min_size=3, max_size=3).map(np.array),
    ),
    cut=st.integers(0, 400),
)
def test_fuzzed_npz_and_checkpoint_files_never_traceback(labels, cut, tmp_path_factory):
    """The readers of user files: npz labels of any kind, and npz or .pt files cut short anywhere, end in one-line
    errors (or load), never in a traceback from numpy, zipfile or torch."""
    import torch
    from torch import nn

    from archsim.errors import ArchsimError

    folder = tmp_path_factory.mktemp("files")
    np.savez(folder / "d.npz", images=np.zeros((3, 4, 4), np.uint8), labels=labels)
    data = (folder / "d.npz").read_bytes()
    (folder / "cut.npz").write_bytes(data[:cut])
    torch.save(nn.Linear(2, 2), folder / "m.pt")
    (folder / "cut.pt").write_bytes((folder / "m.pt").read_bytes()[:cut])
    for load in (
        lambda: load_data(f"npz:{folder / 'd.npz'}"),
        lambda: load_data(f"npz:{folder / 'cut.npz'}"),
        lambda: create_model(f"file:{folder / 'cut.pt'}"),
    ):
        try:
            load()
        except ArchsimError as error:
            assert "\n" not in str(error)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".jpg", ".jpeg", ".png", ".JPEG", ".txt"]),
    cut=st.integers(0, 600),
    flip=st.integers(0, 599),
    size=st.sampled_from([0, 1, 4]),
)
def test_fuzzed_image_folders_never_traceback(suffix, cut, flip, size, tmp_path_factory):
    """The image-folder reader on what a folder of a user's images may hold: files cut short anywhere, a flipped
    byte, empty or 1-pixel images, files that are no image; it loads the images or ends in a one-line error."""
    import torch
    from torchvision.io import encode_jpeg, encode_png

    from archsim.errors import ArchsimError

    folder = tmp_path_factory.mktemp("images")
    for cls in ("cat", "dog"):
        (folder / cls).mkdir()
        pixels = torch.randint(0, 256, (3, max(size, 1), max(size, 1)), dtype=torch.uint8)
        encoded = bytes((encode_png(pixels) if suffix.lower() == ".png" else encode_jpeg(pixels)).numpy())
        good = folder / cls / f"good{'.png' if suffix.lower() == '.png' else '.jpg'}"
        good.write_bytes(encoded)
        damaged = bytearray(encoded[:cut] if size else b"")
        if damaged:
            damaged[flip % len(damaged)] ^= 0xFF
        (folder / cls / f"bad{suffix}").write_bytes(bytes(damaged))
    try:
        images = load_data(f"imagefolder:{folder},size=8")
    except ArchsimError as error:
        assert "\n" not in str(error) and str(error)
    else:
        assert images.images.shape[1:] == (3, 8, 8) and len(images) >= 2
