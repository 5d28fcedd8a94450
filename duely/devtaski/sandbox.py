"""Running one untrusted program under limits: every isolation decision of the development Taski.

Each judging slot owns one unprivileged uid (claimed with a lock file, so two dev Taskis on one
machine never share one). The program runs as that uid because RLIMIT_NPROC never binds root,
with rlimits on CPU time, address space, file size (which also caps stdout: it goes to a file),
processes and open files, at a lower priority. When bubblewrap works it adds namespaces: no
network, a private /proc and pid space, and a filesystem of /usr plus the program's own
directory (`/box`) and an empty size-limited /tmp; test answers are never visible to it.
Without bubblewrap the same limits apply, but the program can read world-readable files.
After every run (and before one, unless that is already done), every process of the slot's uid is
killed, so nothing outlives a run.
See docs/devtaski.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from duely import logs

log = logging.getLogger(__name__)

UID_SPAN = 1000  # uids claimable from the configured base
UID_LOCK_DIR = Path(tempfile.gettempdir()) / "duely-devtaski-uids"
SANDBOX_MODES = ("auto", "bwrap", "rlimits")
BOX_INSIDE = "/box"
SCRATCH_INSIDE = "/tmp"
NICE_INCREMENT = 10  # judged code yields the CPU to the HTTP server and the rest of the machine
STDERR_KEPT_BYTES = 4096
PROBE_TIMEOUT_SECS = 10
REAP_WAIT_SECS = 5.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): nothing can be concluded about the submission."""


@dataclass(frozen=True)
class Limits:
    cpu_secs: int  # RLIMIT_CPU: the kernel kills the program past this much CPU time
    wall_ms: int  # the program is killed past this much real time (sleeping, blocked)
    memory_bytes: int  # RLIMIT_AS
    output_bytes: int  # RLIMIT_FSIZE: stdout, stderr and any file the program writes
    processes: int = 32  # RLIMIT_NPROC, counted for the whole uid
    open_files: int = 64
    scratch_bytes: int = 64 << 20  # size of the private /tmp under bubblewrap


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    cpu_ms: int
    wall_ms: int
    max_rss_bytes: int
    timed_out: bool  # killed by us at the wall-time limit
    stdout: bytes
    output_limit_hit: bool
    stderr: bytes  # the first STDERR_KEPT_BYTES, for verdict details and logs

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def claim_uid(base: int, span: int = UID_SPAN) -> tuple[int, int]:
    """Claim the first free uid at or above `base`: returns it and the lock fd that holds it
    (released by the kernel when the process dies, even by kill -9)."""
    UID_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    for uid in range(base, base + span):
        fd = os.open(UID_LOCK_DIR / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise SandboxError(f"no free uid in {base}..{base + span - 1}")


def _host_root_entries() -> list[str]:
    """bwrap arguments recreating /bin, /lib, /lib64, /sbin as on the host (symlinks into /usr on
    merged-/usr systems, read-only directories otherwise)."""
    args: list[str] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


class Sandbox:
    """Runs programs as one slot's uid. Not thread-safe: one judging slot, one process."""

    def __init__(self, uid: int, use_bwrap: bool, ro_paths: Sequence[str] = ()):
        self.uid = uid
        self.bwrap = shutil.which("bwrap") if use_bwrap else None
        if use_bwrap and not self.bwrap:
            raise SandboxError("bwrap is not installed")
        # Paths outside /usr the programs need (e.g. a Python installed elsewhere), read-only.
        self.ro_paths = [p for p in ro_paths if not p.startswith("/usr/")]
        self._clean = False  # True once a sweep ran and nothing ran as the uid since

    @property
    def mode(self) -> str:
        return "bwrap" if self.bwrap else "rlimits"

    @classmethod
    def create(cls, uid: int, mode: str, ro_paths: Sequence[str] = ()) -> Sandbox:
        """`auto`: bubblewrap when it works for this uid here, else rlimits only; `bwrap`: required."""
        if mode not in SANDBOX_MODES:
            raise SandboxError(f"unknown sandbox mode {mode!r} (use one of {', '.join(SANDBOX_MODES)})")
        if mode == "rlimits":
            return cls(uid, use_bwrap=False, ro_paths=ro_paths)
        if shutil.which("bwrap"):
            sandbox = cls(uid, use_bwrap=True, ro_paths=ro_paths)
            problem = sandbox.probe()
            if problem is None:
                return sandbox
            if mode == "bwrap":
                raise SandboxError(f"bwrap does not work here: {problem}")
            log.warning("bwrap does not work here; judging with rlimits only", extra=logs.kv(uid=uid, why=problem))
        elif mode == "bwrap":
            raise SandboxError("bwrap is not installed")
        return cls(uid, use_bwrap=False, ro_paths=ro_paths)

    def probe(self) -> str | None:
        """None when a trivial program runs in the sandbox, else what went wrong."""
        limits = Limits(cpu_secs=5, wall_ms=PROBE_TIMEOUT_SECS * 1000, memory_bytes=256 << 20, output_bytes=1 << 20)
        with self.box() as box:
            try:
                result = self.run(["/usr/bin/env", "true"], box, limits)
            except (SandboxError, OSError) as exc:
                return str(exc)
        return None if result.succeeded else f"exit {result.exit_code} signal {result.signal}: {result.stderr[:300]!r}"

    @contextlib.contextmanager
    def box(self) -> Iterator[Path]:
        """A fresh directory for one submission's program: readable by the slot's uid, writable by it
        only during `run(..., writable_box=True)` (compiling)."""
        parent = Path(tempfile.mkdtemp(prefix="devtaski-"))
        try:
            parent.chmod(0o711)  # traversable (not listable) so the uid reaches box/ without bwrap
            box = parent / "box"
            box.mkdir(mode=0o755)
            yield box
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    def run(self, argv: Sequence[str], box: Path, limits: Limits, stdin: bytes = b"", writable_box: bool = False) -> RunResult:
        """Run `argv` (`{box}` stands for the program's directory as the program sees it) with
        `stdin` as its standard input; stdout is captured up to `limits.output_bytes`."""
        inside_box = BOX_INSIDE if self.bwrap else str(box)
        argv = [arg.replace("{box}", inside_box) for arg in argv]
        if not self._clean:
            self.kill_leftovers()
        self._clean = False
        if writable_box:
            os.chown(box, self.uid, self.uid)
        # Standard streams are files in a directory only root can enter: the program gets open
        # descriptors, never a path, and RLIMIT_FSIZE caps their size.
        with tempfile.TemporaryDirectory(prefix="devtaski-io-") as io_dir:
            io = Path(io_dir)
            (io / "stdin").write_bytes(stdin)
            scratch = None
            if self.bwrap:
                command, cwd, env = self._bwrap_argv(argv, box, limits, writable_box), None, None
            else:
                scratch = Path(tempfile.mkdtemp(prefix="work-", dir=box.parent))
                os.chown(scratch, self.uid, self.uid)
                command, cwd, env = argv, str(scratch), _program_env(str(scratch))
            try:
                with open(io / "stdin", "rb") as fin, open(io / "stdout", "wb") as fout, open(io / "stderr", "wb") as ferr:
                    result = self._execute(command, cwd, env, fin, fout, ferr, limits)
            finally:
                self.kill_leftovers()
                if writable_box:
                    _chown_tree(box, 0, 0)
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
            stdout = (io / "stdout").read_bytes()
            with open(io / "stderr", "rb") as f:
                stderr = f.read(STDERR_KEPT_BYTES)
        exit_code, sig, cpu_ms, wall_ms, max_rss, timed_out = result
        if self.bwrap and exit_code == 1 and stderr.startswith(b"bwrap: "):
            raise SandboxError(stderr.decode(errors="replace").strip())
        return RunResult(exit_code=exit_code, signal=sig, cpu_ms=cpu_ms, wall_ms=wall_ms, max_rss_bytes=max_rss,
                         timed_out=timed_out, stdout=stdout, output_limit_hit=len(stdout) >= limits.output_bytes, stderr=stderr)

    def _execute(self, command, cwd, env, fin, fout, ferr, limits: Limits) -> tuple[int | None, int | None, int, int, int, bool]:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(command, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, env=env, close_fds=True,
                                    start_new_session=True, preexec_fn=_limit_and_drop(self.uid, limits))
        except OSError as exc:
            raise SandboxError(f"cannot start {command[0]}: {exc}") from exc
        pidfd = os.pidfd_open(proc.pid)
        try:
            finished, _, _ = select.select([pidfd], [], [], limits.wall_ms / 1000)
        finally:
            os.close(pidfd)
        timed_out = not finished
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # under bwrap, --die-with-parent takes the rest down
        # wait4, not Popen.wait: its rusage covers the program and every descendant it reaped
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall_ms = int((time.monotonic() - started) * 1000)
        cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
        exit_code, sig = None, None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        else:
            exit_code = os.WEXITSTATUS(status)
            if self.bwrap and exit_code > 128:  # bwrap reports a program killed by signal N as 128+N
                sig, exit_code = exit_code - 128, None
        return exit_code, sig, cpu_ms, wall_ms, usage.ru_maxrss * 1024, timed_out

    def _bwrap_argv(self, argv: list[str], box: Path, limits: Limits, writable_box: bool) -> list[str]:
        # --as-pid-1: the program is the namespace's init, so bwrap's own wait4 sees its CPU time
        # and the whole namespace dies with it; --die-with-parent: killing bwrap kills everything.
        assert self.bwrap is not None, "only called when judging under bwrap"
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1",
                "--ro-bind", "/usr", "/usr", *_host_root_entries()]
        for path in self.ro_paths:
            args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.scratch_bytes), "--tmpfs", SCRATCH_INSIDE,
                 "--bind" if writable_box else "--ro-bind", str(box), BOX_INSIDE,
                 "--chdir", SCRATCH_INSIDE, "--clearenv"]
        for name, value in _program_env(SCRATCH_INSIDE).items():
            args += ["--setenv", name, value]
        return args + ["--", *argv]

    def kill_leftovers(self) -> None:
        """SIGKILL every process running as this slot's uid, then reap what came back to us."""
        pid = os.fork()
        if pid == 0:  # a throwaway child takes the uid: kill(-1) then reaches exactly that uid's processes
            try:
                os.setgroups([])
                os.setgid(self.uid)
                os.setuid(self.uid)
                os.kill(-1, signal.SIGKILL)
            except BaseException:  # ESRCH (nothing left to kill) is the normal case
                pass
            os._exit(0)
        os.waitpid(pid, 0)
        reap_children(REAP_WAIT_SECS)
        self._clean = True


def reap_children(wait_secs: float = 0.0) -> None:
    """Collect exited descendants handed to us as child subreaper (see become_subreaper), waiting up
    to `wait_secs` for ones still dying (a killed namespace's init exits a moment after the kill).
    Only sandboxed processes are ever our children here, so waiting for all of them is safe."""
    deadline = time.monotonic() + wait_secs
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)


def become_subreaper() -> None:
    """Orphaned descendants (bwrap's helpers, a fork bomb's children) get reparented to this
    process instead of init, so they are reaped at once and stop counting toward RLIMIT_NPROC."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_child_subreaper, 1)


def _program_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _limit_and_drop(uid: int, limits: Limits):
    """preexec_fn: limits first (as root, any value may be set), then become the slot's uid.
    Runs between fork and exec, so only in single-threaded processes (the judge workers)."""
    cpu = max(1, math.ceil(limits.cpu_secs))

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))  # soft = hard: SIGKILL, which even a pid-1 cannot ignore
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_STACK, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.nice(NICE_INCREMENT)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return preexec
