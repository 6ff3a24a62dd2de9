"""The bad-input suite's tools: run the CLI in this process (fast) or as a real subprocess
(kills, another user), and the checks every refusal must pass: exit code 2, the message
names the file/line/key and the fix, no traceback, nothing half-written or hidden left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tifa_lite.config.loader import RECIPES_DIR

REPO = Path(__file__).resolve().parents[2]
RECIPE = RECIPES_DIR / "sft_qlora_roleplay.yaml"
NOBODY = 65534


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` → :class:`Outcome` of ``tifa-lite ARGS`` run in this process; an
    exception other than a TifaError escapes, as it would as a traceback."""
    from tifa_lite.cli import main

    def run(*args) -> Outcome:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args, as_user: int | None = None, timeout: float = 300) -> Outcome:
    """``tifa-lite ARGS`` as a real process; ``as_user`` lowers it to that uid (root may write anywhere)."""
    cmd = [sys.executable, "-m", "tifa_lite", *map(str, args)]
    env = subprocess_env()
    if as_user is not None:
        cmd = [*lowered_command(as_user), *cmd]
        env["HOME"] = env["HF_HOME"] = tempfile.gettempdir()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tempfile.gettempdir())
    return Outcome(done.returncode, done.stdout, done.stderr)


def kill_when(args, ready, timeout: float = 240) -> Outcome:
    """Start ``tifa-lite ARGS``, SIGKILL it as soon as ``ready()`` is true (polled every 10 ms)."""
    return signal_when(args, ready, signal.SIGKILL, timeout)


def signal_when(args, ready, signum: int, timeout: float = 240, meanwhile=None) -> Outcome:
    """Start ``tifa-lite ARGS``, send it ``signum`` as soon as ``ready()`` is true (polled every
    10 ms) and wait for it to end; a process that ignores the signal fails the test.
    ``meanwhile(proc)`` runs between ``ready()`` and the signal."""
    proc = subprocess.Popen([sys.executable, "-m", "tifa_lite", *map(str, args)], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the command ended (exit {proc.returncode}) before the signal point:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the signal point was never reached")
            time.sleep(0.01)
        if meanwhile is not None:
            meanwhile(proc)
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    return Outcome(proc.returncode, out, err)


@contextmanager
def signal_self_when(ready, signum: int):
    """For a command run in this process (no second torch import to wait for): a thread sends
    ``signum`` to this process once ``ready()``. A signal that comes after the command has put
    back its handlers meets a no-op one, not pytest's."""
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if ready():
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.01)

    previous = signal.signal(signum, lambda *_: None)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        signal.signal(signum, previous)


def assert_refused(outcome: Outcome, *names: str, code: int = 2) -> None:
    """Exit ``code``, every one of ``names`` (file:line, key, fix) in stderr, no traceback."""
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.code == code, outcome.err
    for name in names:
        assert name in outcome.err, f"{name!r} not in: {outcome.err}"


def hidden(folder: Path) -> list[str]:
    """Hidden entries anywhere below ``folder``: temporary files and folders, locks."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith("."))


def leftovers(folder: Path) -> list[str]:
    """What an interrupted or refused write may leave: hidden entries and *.partial, anywhere below."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(".partial"))


def any_match(folder: Path, pattern: str):
    return lambda: any(folder.glob(pattern))


@pytest.fixture
def train_args(tiny_model_dir, tmp_path):
    """``train_args(data, **overrides)``: a seconds-long SFT run on the tiny Llama."""

    def make(data: Path | str | None = None, **overrides) -> list[str]:
        items = {
            "model.name_or_path": tiny_model_dir, "train.output_dir": tmp_path / "run",
            "train.max_steps": 2, "train.per_device_batch_size": 2, "train.global_batch_size": None,
            "train.gradient_accumulation_steps": 1, "train.warmup_ratio": 0, "train.auto_fit": False,
            "train.gradient_checkpointing": False, "train.progress_bar": False, "data.max_length": 128,
            "data.format": "auto", "data.eval_ratio": 0, "data.system_prompt": None,
            "lora.r": 4, "lora.alpha": 8,
        }
        if data is not None:
            items["data.path"] = data
        items.update({k.replace("__", "."): v for k, v in overrides.items()})
        return ["train", RECIPE, *(f"{k}={'null' if v is None else v}" for k, v in items.items())]

    return make


@pytest.fixture
def shared_tmp():
    """A folder another user can enter (pytest's tmp_path is 0700), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tifa-bad-input-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def lowered_command(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def why_user_cannot_run_us(uid: int, python: str = sys.executable) -> str | None:
    """Why ``uid`` cannot run this interpreter and import the project (None: it can). Root's
    clone or virtualenv under a private home (/root is mode 700 in many containers) is out of
    another user's reach, and every command run as that user would fail on the import."""
    env = {**subprocess_env(), "HOME": tempfile.gettempdir()}
    probe = [*lowered_command(uid), python, "-c", "import pydantic, tifa_lite.cli"]
    done = subprocess.run(probe, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=120)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]
    return (f"uid {uid} cannot run {python} and import tifa_lite from {REPO} ({last}): the clone or its "
            "virtualenv is under a folder that user cannot read (e.g. a mode-700 home)")


@pytest.fixture
def read_only_user():
    """The uid to run as so that a 0555 folder is really read-only: ours, unless we are root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.fail("running as root needs setpriv (util-linux) to test a read-only folder as another user")
    reason = why_user_cannot_run_us(NOBODY)
    if reason:
        pytest.skip(reason)
    return NOBODY


def conversation(user: str = "Hi there", assistant: str = "Hello! How can I help?") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size)`` → a folder on a fresh tmpfs of ``size`` (e.g. ``"1m"``), really full
    when full; unmounted afterwards. Skipped, with the reason, where mounting is not allowed."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command here to make a small file system")
        folder = tmp_path / f"fs{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here (needs root where mounts are allowed): {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    try:
        yield make
    finally:
        for folder in mounts:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Take all but ``leave`` bytes of the file system ``folder`` is on."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free - leave
    try:
        with filler.open("wb") as fh:
            while free > 0:
                fh.write(b"\0" * min(free, 1 << 20))
                free -= 1 << 20
    except OSError:  # full a few blocks early: as good
        pass
    return filler
