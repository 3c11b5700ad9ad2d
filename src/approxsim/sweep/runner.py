"""Running a sweep's points: one base command per point, in a child process, with retries.

Every point runs as ``python -m approxsim <command> <options> <output options>`` in its own
process, so a crash, a hang killed from outside or an error of one point never stops the
sweep: it is retried up to ``retries`` more times and, if it still fails, recorded as failed
with its last error line. The child's output goes to ``DIR/logs/<point>.log`` (appended, one
header per attempt).

Two executors run the children:

* ``local`` — ``jobs`` at a time on this machine, each given ``cores // jobs`` threads
  (``OMP_NUM_THREADS`` and the command's ``--threads``) so the machine is not oversubscribed;
* ``ray`` — each point a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run``
  GPUs, on a local Ray instance or a cluster (``address``). The task starts the child on
  whichever node Ray picks, writing to the sweep's folder: on a cluster that folder (and the
  spec's input files) must be on a filesystem every node mounts at the same path.

The coordinator (this process) is the only writer of the state file; it rewrites it after
every event, so a sweep killed at any moment restarts where it stood: complete points are
skipped, interrupted ones continue (``--resume`` of the base command).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from approxsim._io import atomic_write_text
from approxsim._runtime import ProgressFactory, utc_now
from approxsim.sweep.errors import SweepError
from approxsim.sweep.plan import SweepPlan
from approxsim.sweep.state import new_state, remove_stale_state_temporaries, write_state

__all__ = [
    "EXECUTORS",
    "PointJob",
    "Outcome",
    "Launcher",
    "run_point",
    "run_sweep",
    "usable_cores",
]

EXECUTORS = ("local", "ray")
#: The folder of the points' logs, in the sweep's folder.
LOG_FOLDER = "logs"


@dataclass(frozen=True)
class PointJob:
    """One attempt at one point, as a child process runs it.

    Attributes:
        name: The point.
        argv: The words after ``approxsim`` (command, options, output options).
        folder: The point's folder (created before the child starts).
        log: The log file (appended).
        stdout_file: Where the child's standard output is saved when it succeeds (``eval
            --json``); ``None``: standard output goes to the log.
        env: Environment variables set for the child (thread counts).
        cwd: The child's working folder (the spec's relative paths are relative to it).
    """

    name: str
    argv: tuple[str, ...]
    folder: str
    log: str
    stdout_file: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."

    def command(self) -> list[str]:
        """The child's command line (this Python, ``-m approxsim``)."""
        return [sys.executable, "-m", "approxsim", *self.argv]


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended.

    Attributes:
        returncode: The child's exit status (negative: killed by that signal).
        seconds: Wall time of the attempt.
        error: The child's last error line (``None`` when it succeeded).
    """

    returncode: int
    seconds: float
    error: str | None = None


#: Runs one attempt and says how it ended (the default is :func:`run_point`).
Launcher = Callable[[PointJob], Outcome]


def run_point(
    job: PointJob, on_start: Callable[[subprocess.Popen[bytes]], None] | None = None
) -> Outcome:
    """Run one attempt at a point in a child process and wait for it.

    Args:
        job: The attempt.
        on_start: Called with the child process once it runs (the local executor keeps it
            to stop it on Ctrl-C).

    Returns:
        The outcome; a child that cannot be started is an outcome with status 127.
    """
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(job.log, "ab") as log:
        log.write(f"== {utc_now()} approxsim {' '.join(job.argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                job.command(),
                stdout=subprocess.PIPE if job.stdout_file else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **job.env},
                cwd=job.cwd,
            )
        except OSError as exc:
            return Outcome(127, time.perf_counter() - start, f"cannot start the point: {exc}")
        if on_start is not None:
            on_start(proc)
        try:
            stdout, _ = proc.communicate()
        except BaseException:
            # Ctrl-C, or a Ray task cancelled: the run stops too (it keeps its last epoch).
            _stop(proc)
            raise
    seconds = time.perf_counter() - start
    if proc.returncode == 0 and job.stdout_file:
        atomic_write_text(job.stdout_file, stdout.decode("utf-8", errors="replace"))
    if proc.returncode == 0:
        return Outcome(0, seconds)
    return Outcome(proc.returncode, seconds, _last_error(Path(job.log), proc.returncode))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _last_error(log: Path, returncode: int) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
    except OSError:
        lines = []
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("== ")]
    errors = [ln for ln in lines if ln.startswith("approxsim: ")]
    what = errors[-1] if errors else (lines[-1] if lines else "no output")
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return f"{status}: {what}"[:500]


def usable_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- executors
class _Executor(Protocol):
    slots: int

    def submit(self, job: PointJob) -> None: ...

    def wait(self, timeout: float) -> list[tuple[PointJob, Outcome]]: ...

    def stop(self) -> None: ...


class _LocalExecutor:
    """``jobs`` children at a time on this machine."""

    def __init__(self, jobs: int, launcher: Launcher | None) -> None:
        self.slots = jobs
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
        self._futures: dict[concurrent.futures.Future[Outcome], PointJob] = {}
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._launcher = launcher

    def _run(self, job: PointJob) -> Outcome:
        if self._launcher is not None:
            return self._launcher(job)

        def keep(proc: subprocess.Popen[bytes]) -> None:
            with self._lock:
                self._procs.add(proc)

        return run_point(job, keep)

    def submit(self, job: PointJob) -> None:
        self._futures[self._pool.submit(self._run, job)] = job

    def wait(self, timeout: float) -> list[tuple[PointJob, Outcome]]:
        done, _ = concurrent.futures.wait(
            list(self._futures), timeout=timeout, return_when="FIRST_COMPLETED"
        )
        out = []
        for fut in done:
            job = self._futures.pop(fut)
            exc = fut.exception()
            out.append(
                (job, Outcome(-1, 0.0, f"the launcher failed: {exc!r}") if exc else fut.result())
            )
        return out

    def stop(self) -> None:
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _RayExecutor:
    """Each attempt a Ray task with its CPU and GPU needs."""

    def __init__(self, address: str | None, cpus: float, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError(
                "--executor ray needs Ray, which is not installed: pip install 'approxsim[sweep]'"
            ) from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SweepError(
                    f"cannot start or reach Ray (address {address!r}): {exc}"
                ) from None
        total = float(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, int(total // max(cpus, 1e-9)))
        self._task = ray.remote(run_point).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._refs: dict[Any, PointJob] = {}

    def submit(self, job: PointJob) -> None:
        self._refs[self._task.remote(job)] = job

    def wait(self, timeout: float) -> list[tuple[PointJob, Outcome]]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                out.append((job, self._ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a lost worker or node is a failed attempt
                out.append((job, Outcome(-1, 0.0, f"the Ray task failed: {exc!r}"[:500])))
        return out

    def stop(self) -> None:
        for ref in list(self._refs):
            # Not force=True: the task gets a KeyboardInterrupt and stops its run first.
            self._ray.cancel(ref)
        if self._started:
            self._ray.shutdown()


# ---------------------------------------------------------------------------- the sweep
@dataclass
class _Tally:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: list[float] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)

    def line(self, slots: int) -> str:
        """``done / running / failed`` and the ETA: the mean time of the points done so far
        for each point left, less the time the running ones have had, over the slots."""
        left = self.total - self.done - self.failed
        eta = ""
        if self.seconds and left:
            per = sum(self.seconds) / len(self.seconds)
            now = time.perf_counter()
            spent = sum(min(per, now - t) for t in self.started.values())
            eta = f", ETA {_duration(max(0.0, per * left - spent) / max(1, min(slots, left)))}"
        running = len(self.started)
        return f"{self.done}/{self.total} done, {running} running, {self.failed} failed{eta}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_sweep(
    plan: SweepPlan,
    *,
    executor: str = "local",
    jobs: int = 1,
    retries: int = 1,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    launcher: Launcher | None = None,
    progress: ProgressFactory | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the points of a planned sweep that are not complete yet.

    Args:
        plan: What :func:`~approxsim.sweep.plan_sweep` returned.
        executor: ``"local"`` or ``"ray"``.
        jobs: Points at a time (local executor).
        retries: Further attempts at a failed point before it is recorded as failed.
        address: The Ray cluster (``"auto"``, ``"HOST:PORT"``); ``None``: a Ray instance on
            this machine (or the one already initialized in this process).
        cpus_per_run: CPUs a Ray task asks for (and threads its child uses).
        gpus_per_run: GPUs a Ray task asks for.
        launcher: Runs one attempt (local executor; default :func:`run_point`). Tests
            replace it.
        progress: Makes the progress bar (counts finished points).
        report: Receives one status line per event (points done / running / failed, ETA).

    Returns:
        ``{"out", "points", "done", "skipped", "failed": [names], "errors": {name: line}}``.

    Raises:
        SweepError: an unknown executor or bad counts, Ray missing or unreachable.
        KeyboardInterrupt: after stopping the running points and saving the state.
    """
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if jobs < 1 or retries < 0 or cpus_per_run <= 0 or gpus_per_run < 0:
        raise SweepError(
            f"bad counts: jobs={jobs} (>= 1), retries={retries} (>= 0), "
            f"cpus_per_run={cpus_per_run} (> 0), gpus_per_run={gpus_per_run} (>= 0)"
        )
    say = report or (lambda line: None)
    state = _start_state(plan)
    entries = {e["name"]: e for e in state["points"]}
    todo = [p.name for p in plan.points if entries[p.name]["status"] != "done"]
    tally = _Tally(total=len(plan.points), done=len(plan.points) - len(todo))
    tally.skipped = tally.done
    if tally.skipped:
        say(f"{tally.skipped} of {tally.total} points are complete already; skipped")
    write_state(plan.out, state)
    if not todo:
        return _summary(plan, state, tally)
    threads = _threads(executor, jobs, cpus_per_run)
    jobs_by_name = {p.name: _job(plan, p.name, threads) for p in plan.points if p.name in todo}
    ex: _Executor = (
        _LocalExecutor(jobs, launcher)
        if executor == "local"
        else _RayExecutor(address, cpus_per_run, gpus_per_run)
    )
    bar = progress("sweep", len(todo)) if progress is not None else None
    try:
        _drive(plan, state, ex, [jobs_by_name[n] for n in todo], retries, tally, say, bar)
    except BaseException:
        ex.stop()
        for e in state["points"]:
            if e["status"] == "running":
                e["status"] = "pending"
        write_state(plan.out, state)
        raise
    finally:
        if bar is not None:
            bar.close()
    ex.stop()
    return _summary(plan, state, tally)


def _start_state(plan: SweepPlan) -> dict[str, Any]:
    """The state to run from: the earlier run's (running and failed points pending again,
    done points checked) or a new one; complete folders are done."""
    plan.out.mkdir(parents=True, exist_ok=True)
    remove_stale_state_temporaries(plan.out)
    state = plan.previous or new_state(plan.spec, plan.points, plan.info)
    for entry in state["points"]:
        if entry["name"] in plan.info and entry.get("multiplier") is None:
            entry["multiplier"] = plan.info[entry["name"]].get("multiplier")
        complete = plan.command.complete(plan.out / entry["name"])
        if complete:
            entry["status"] = "done"
        elif entry["status"] != "pending":
            entry.update(status="pending", attempts=0, error=None)
    return state


def _threads(executor: str, jobs: int, cpus_per_run: float) -> int:
    if executor == "ray":
        return max(1, int(cpus_per_run))
    return max(1, usable_cores() // jobs)


def _job(plan: SweepPlan, name: str, threads: int) -> PointJob:
    point = next(p for p in plan.points if p.name == name)
    folder = (plan.out / name).absolute()
    cmd = plan.command
    argv = [*cmd.words, *point.argv, *cmd.output_argv(folder)]
    if cmd.threads_flag and cmd.threads_flag not in point.argv:
        argv += [cmd.threads_flag, str(threads)]
    n = str(threads)
    return PointJob(
        name=name,
        argv=tuple(argv),
        folder=str(folder),
        log=str((plan.out / LOG_FOLDER / f"{name}.log").absolute()),
        stdout_file=str(folder / cmd.result_file)
        if cmd.stdout_result and cmd.result_file
        else None,
        env={"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n},
        cwd=os.getcwd(),
    )


def _drive(
    plan: SweepPlan,
    state: dict[str, Any],
    ex: _Executor,
    queue: list[PointJob],
    retries: int,
    tally: _Tally,
    say: Callable[[str], None],
    bar: Any,
) -> None:
    """Keep the executor busy until every point is done or failed; record every event."""
    entries = {e["name"]: e for e in state["points"]}
    in_flight = 0
    while queue or in_flight:
        while queue and in_flight < ex.slots:
            job = queue.pop(0)
            ex.submit(job)
            in_flight += 1
            entries[job.name].update(status="running", attempts=entries[job.name]["attempts"] + 1)
            tally.started[job.name] = time.perf_counter()
            write_state(plan.out, state)
            say(f"[{tally.line(ex.slots)}] {job.name} started")
        for job, outcome in ex.wait(timeout=5.0):
            in_flight -= 1
            tally.started.pop(job.name, None)
            entry = entries[job.name]
            ok = outcome.returncode == 0 and plan.command.complete(Path(job.folder))
            if ok:
                entry.update(status="done", seconds=round(outcome.seconds, 1), error=None)
                tally.done += 1
                tally.seconds.append(outcome.seconds)
                what = f"done in {_duration(outcome.seconds)}"
            else:
                entry["error"] = outcome.error or "the run ended without a complete result"
                if entry["attempts"] <= retries:
                    entry["status"] = "pending"
                    queue.append(job)
                    what = f"failed ({entry['error']}); retrying"
                else:
                    entry["status"] = "failed"
                    tally.failed += 1
                    what = f"FAILED after {entry['attempts']} attempt(s): {entry['error']}"
            write_state(plan.out, state)
            if bar is not None and entry["status"] in ("done", "failed"):
                bar.update(1)
            say(f"[{tally.line(ex.slots)}] {job.name} {what}")


def _summary(plan: SweepPlan, state: dict[str, Any], tally: _Tally) -> dict[str, Any]:
    failed = [e for e in state["points"] if e["status"] == "failed"]
    return {
        "out": str(plan.out),
        "points": tally.total,
        "done": sum(e["status"] == "done" for e in state["points"]),
        "skipped": tally.skipped,
        "failed": [e["name"] for e in failed],
        "errors": {e["name"]: e["error"] for e in failed},
    }
