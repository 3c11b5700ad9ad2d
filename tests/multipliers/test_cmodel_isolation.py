"""A user's C model runs in a child process: a crash, hang or exit never takes approxsim down.

Each hostile model below used to hang the test process for good (an infinite loop, deaf to
Ctrl-C), kill it (NULL dereference, ``abort()``, a crashing constructor) or end it silently
(``exit(3)``), leaving a ``.build-*`` folder in the cache. Now each is a one-line
:class:`~approxsim.multipliers.cmodel.CModelError` naming the model and what it was evaluating,
and nothing is left behind: no build folder, no exchange folder, no process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mult_c_sources import MITCHELL_C

import approxsim
from approxsim.cli import main
from approxsim.multipliers import cmodel, sandbox

SPIN_C = r"""
float spin_mul(float a, float b)
{
    volatile int spin = 1;
    while (spin) {}
    return a * b;
}
"""

# Writes its process id to $APPROXSIM_TEST_MARK (atomically), then spins: the Ctrl-C test
# waits for the mark, so it knows the model is running, and then checks that the process is gone.
MARK_SPIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

float marked_spin_mul(float a, float b)
{
    const char *mark = getenv("APPROXSIM_TEST_MARK");
    if (mark) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", mark);
        FILE *f = fopen(tmp, "w");
        if (f) { fprintf(f, "%d", (int)getpid()); fclose(f); rename(tmp, mark); }
    }
    volatile int spin = 1;
    while (spin) {}
    return a * b;
}
"""

# A volatile pointer: the compiler cannot prove it is NULL, so it really loads through it.
NULL_C = r"""
static float *volatile nowhere;
float null_mul(float a, float b) { return *nowhere * a * b; }
"""

EXIT_C = r"""
#include <stdlib.h>
float exit_mul(float a, float b) { exit(EXIT_CODE); return a * b; }
"""

ABORT_C = r"""
#include <stdio.h>
#include <stdlib.h>
float abort_mul(float a, float b)
{
    fprintf(stderr, "abort_mul: giving up on %g x %g\n", a, b);
    abort();
    return a * b;
}
"""

# Crashes only off the grid (operand exponent other than 0): in the decomposability check.
LATE_CRASH_C = (
    MITCHELL_C
    + r"""
#include <stdlib.h>
float late_mul(float a, float b)
{
    uint32_t u = *(uint32_t *)&a;
    if (((u >> 23) & 0xffu) != 127u) abort();
    return mitchell_mul(a, b);
}
"""
)

CONSTRUCTOR_C = r"""
#include <stdlib.h>
__attribute__((constructor)) static void boom(void) { abort(); }
float ctor_mul(float a, float b) { return a * b; }
"""

# A valid model that leaves a process behind (its pid in $APPROXSIM_TEST_MARK) on first call.
FORKING_C = (
    MITCHELL_C
    + r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
float forking_mul(float a, float b)
{
    static int forked;
    if (!forked) {
        int ready[2];
        char byte = 0;
        forked = 1;
        if (pipe(ready) != 0) abort();
        if (fork() == 0) {
            const char *mark = getenv("APPROXSIM_TEST_MARK");
            FILE *f = fopen(mark, "w");
            if (f) { fprintf(f, "%d", (int)getpid()); fclose(f); }
            if (write(ready[1], &byte, 1) != 1) abort();
            for (;;) pause();
        }
        if (read(ready[0], &byte, 1) != 1) abort();  /* the mark is written */
    }
    return mitchell_mul(a, b);
}
"""
)

# A valid model that talks on both streams on every call.
NOISY_C = (
    MITCHELL_C
    + r"""
#include <stdio.h>
float noisy_mul(float a, float b)
{
    printf("noisy_mul(%g, %g)\n", a, b);
    fprintf(stderr, "noisy_mul on stderr\n");
    return mitchell_mul(a, b);
}
"""
)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary folders of this test go here, so the test can see that none is left over."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_nothing_left(cache: Path, tmp: Path) -> None:
    section = cache / cmodel.CACHE_SECTION
    leftovers = [p.name for p in section.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == [], leftovers
    assert list(tmp.iterdir()) == []


def build_error(path: Path, function: str, **options: object) -> approxsim.MultiplierError:
    """The error ``from_c`` raises (the call comes first, so the old code shows its failure)."""
    with pytest.raises(approxsim.MultiplierError) as info:
        approxsim.Multiplier.from_c(path, function, 3, check_samples=256, **options)
    msg = str(info.value)
    assert "\n" not in msg
    return info.value


def test_null_dereference_is_a_crash_error(
    tmp_path: Path, isolated_cache: Path, private_tmp: Path
) -> None:
    err = build_error(write(tmp_path, "null.c", NULL_C), "null_mul")
    assert isinstance(err, cmodel.CModelCrashError)
    assert "the C model null_mul in null.c crashed with SIGSEGV" in str(err)
    assert "while evaluating the 8x8 grid" in str(err)
    assert_nothing_left(isolated_cache, private_tmp)


def test_abort_is_a_crash_error_quoting_the_model(
    tmp_path: Path, isolated_cache: Path, private_tmp: Path
) -> None:
    err = build_error(write(tmp_path, "abort.c", ABORT_C), "abort_mul")
    assert isinstance(err, cmodel.CModelCrashError)
    assert "abort_mul in abort.c crashed with SIGABRT (aborted)" in str(err)
    assert "abort_mul: giving up on 1 x 1" in str(err)  # the model's last words
    assert_nothing_left(isolated_cache, private_tmp)


@pytest.mark.parametrize("code", [3, 0])
def test_exit_is_an_exit_error(
    tmp_path: Path, isolated_cache: Path, private_tmp: Path, code: int
) -> None:
    err = build_error(write(tmp_path, "exit.c", EXIT_C), "exit_mul", flags=[f"-DEXIT_CODE={code}"])
    assert isinstance(err, cmodel.CModelExitError)
    assert f"the C model exit_mul in exit.c called exit({code}) while evaluating" in str(err)
    assert_nothing_left(isolated_cache, private_tmp)


def test_infinite_loop_times_out(
    tmp_path: Path, isolated_cache: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.TIME_LIMIT_ENV, "1")
    start = time.monotonic()
    err = build_error(write(tmp_path, "spin.c", SPIN_C), "spin_mul")
    assert time.monotonic() - start < 30
    assert isinstance(err, cmodel.CModelTimeoutError)
    msg = str(err)
    assert "spin_mul in spin.c did not finish within 1 s while evaluating the 8x8 grid" in msg
    assert "infinite loop?" in msg and sandbox.TIME_LIMIT_ENV in msg
    assert_nothing_left(isolated_cache, private_tmp)


def test_time_limit_keyword_wins_over_the_environment(
    tmp_path: Path, isolated_cache: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.TIME_LIMIT_ENV, "1000")
    err = build_error(
        write(tmp_path, "spin.c", SPIN_C), "spin_mul", time_limit=0.5, cache_results=False
    )
    assert isinstance(err, cmodel.CModelTimeoutError)
    assert "did not finish within 0.5 s" in str(err)
    assert_nothing_left(isolated_cache, private_tmp)


def test_crash_in_the_decomposability_check_names_it(tmp_path: Path) -> None:
    err = build_error(write(tmp_path, "late.c", LATE_CRASH_C), "late_mul")
    assert isinstance(err, cmodel.CModelCrashError)
    assert "while evaluating the 256 random operand pairs of the decomposability check" in str(err)


def test_crashing_constructor_never_runs_in_approxsim(tmp_path: Path) -> None:
    err = build_error(write(tmp_path, "ctor.c", CONSTRUCTOR_C), "ctor_mul")
    assert isinstance(err, cmodel.CModelCrashError)
    assert "while loading its library" in str(err)


def test_model_output_does_not_corrupt_the_exchange(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "noisy.c", NOISY_C)
    mult = approxsim.Multiplier.from_c(
        path, "noisy_mul", 3, flags=["-DMBITS=3"], check_samples=256, cache_results=False
    )
    want = approxsim.get_multiplier("mitchell3")
    assert torch.equal(mult.lut.view(torch.int32), want.lut.view(torch.int32))
    assert mult.fingerprint == want.fingerprint
    out, err = capfd.readouterr()
    assert "noisy_mul" not in out and "noisy_mul" not in err  # approxsim's streams stay clean


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_bad_time_limit_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(sandbox.TIME_LIMIT_ENV, value)
    with pytest.raises(approxsim.MultiplierError, match=sandbox.TIME_LIMIT_ENV):
        approxsim.Multiplier.from_c(write(tmp_path, "m.c", MITCHELL_C), "mitchell_mul", 3)


@pytest.mark.parametrize("value", [0, -2.0, float("nan"), "10", True])
def test_bad_time_limit_keyword(tmp_path: Path, value: object) -> None:
    with pytest.raises(approxsim.MultiplierError, match="time_limit"):
        approxsim.Multiplier.from_c(
            write(tmp_path, "m.c", MITCHELL_C), "mitchell_mul", 3, time_limit=value
        )


def test_default_time_limit_scales_with_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.TIME_LIMIT_ENV, raising=False)
    small, large = sandbox.time_limit_for(64), sandbox.time_limit_for(1 << 22)
    assert sandbox.BASE_SECONDS <= small < large
    assert large == pytest.approx(sandbox.BASE_SECONDS + (1 << 22) * sandbox.SECONDS_PER_PRODUCT)
    assert sandbox.time_limit_for(1 << 22, 2.5) == 2.5


def test_direct_gemm_crash_is_a_crash_error(tmp_path: Path, private_tmp: Path) -> None:
    model = cmodel.load_cmodel(write(tmp_path, "null.c", NULL_C), "null_mul")
    a = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(cmodel.CModelCrashError, match=r"while evaluating the direct GEMM 3x4x2"):
        model.gemm(a, np.ones((4, 2), dtype=np.float32), threads=2)
    with pytest.raises(cmodel.CModelCrashError, match="while evaluating 5 operand pairs"):
        model(np.ones(5, dtype=np.float32), np.ones(5, dtype=np.float32))
    assert list(private_tmp.iterdir()) == [model.library.parent]  # only the compiled model


def test_cli_reports_a_crash_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "null.c", NULL_C)
    argv = ["--c", str(path), "--function", "null_mul", "--mantissa-bits", "3"]
    for command in (["multipliers", "show"], ["bench", "direct", "--problems", "tiny_gemm"]):
        assert main([*command, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        assert [ln for ln in err if ln.startswith("approxsim: error")] == err[-1:]
        assert err[-1].startswith("approxsim: error: the C model null_mul in null.c crashed with")


_INTERRUPTED = textwrap.dedent(
    """
    import sys
    import approxsim
    try:
        approxsim.Multiplier.from_c(sys.argv[1], "marked_spin_mul", 3)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
    """
)


def test_ctrl_c_stops_the_model_promptly(tmp_path: Path, isolated_cache: Path) -> None:
    path = write(tmp_path, "marked.c", MARK_SPIN_C)
    mark = tmp_path / "model-pid"
    env = dict(os.environ, APPROXSIM_TEST_MARK=str(mark))
    env[sandbox.TIME_LIMIT_ENV] = "600"  # only Ctrl-C may stop it
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the model never started"
            time.sleep(0.05)
        model_pid = int(mark.read_text())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted" in out and "KeyboardInterrupt" in err
    assert model_pid != proc.pid  # the model ran in a process of its own...
    deadline = time.monotonic() + 10
    while _alive(model_pid):  # ...which is gone with approxsim
        assert time.monotonic() < deadline, f"model process {model_pid} still running"
        time.sleep(0.05)
    section = isolated_cache / cmodel.CACHE_SECTION
    assert not [p for p in section.iterdir() if p.name.startswith(".build-")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_processes_the_model_starts_do_not_outlive_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "grandchild-pid"
    monkeypatch.setenv("APPROXSIM_TEST_MARK", str(mark))
    path = write(tmp_path, "forking.c", FORKING_C)
    mult = approxsim.Multiplier.from_c(
        path, "forking_mul", 3, flags=["-DMBITS=3"], check_samples=256, cache_results=False
    )
    assert mult.fingerprint == approxsim.get_multiplier("mitchell3").fingerprint
    pid = int(mark.read_text())  # written before the model went on
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"the model's process {pid} is still running"
        time.sleep(0.05)


def test_compile_failure_of_load_cmodel_leaves_nothing(tmp_path: Path, private_tmp: Path) -> None:
    with pytest.raises(approxsim.CompilerError):
        cmodel.load_cmodel(write(tmp_path, "broken.c", "float broken_mul(float a, {"), "broken_mul")
    assert list(private_tmp.iterdir()) == []


def test_folders_of_killed_runs_are_swept(tmp_path: Path, private_tmp: Path) -> None:
    """A run killed with kill -9 cannot remove its folders; the next evaluation does."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = private_tmp / f"{sandbox.RUN_PREFIX}{gone.pid}-x1"
    dead_lib = private_tmp / f"{cmodel.LIBRARY_PREFIX}{gone.pid}-x2"
    living = private_tmp / f"{sandbox.RUN_PREFIX}{os.getppid()}-x3"
    for folder in (dead, dead_lib, living):
        folder.mkdir()
        (folder / "in-0-0.bin").write_bytes(b"0" * 64)
    model = cmodel.load_cmodel(write(tmp_path, "m.c", MITCHELL_C), "mitchell_mul")
    assert not dead_lib.exists()
    one = np.ones(4, dtype=np.float32)
    np.testing.assert_array_equal(model(one, one), one)
    assert not dead.exists()
    assert living.exists()  # its process may still need it
