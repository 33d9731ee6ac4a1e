"""Refresh the README's `make eval` excerpt and the report images in docs/ from a real run.

    .venv/bin/python tools/readme_run.py [--keep-outputs]

Runs the main job (what `make eval` runs: recipes/judge_constrained_vs_free.yaml) into a
fresh output folder and Dagster instance, then

- replaces the README block between ``<!-- make-eval:begin -->`` and
  ``<!-- make-eval:end -->`` with the printed summary (progress bars and run ids left out),
  stamped with the commit, the machine and the wall time that produced it;
- writes the constrained run's report figures into ``docs/images/``: a screenshot of its
  HTML report when a headless Chromium is on PATH (``chromium``, ``chromium-browser`` or
  ``google-chrome``), and always the report's own plots (reliability diagram, coverage
  curve) as the analysis wrote them.

Nothing is typed by hand: rerun it after a change that moves the numbers, and commit the
README and docs/images together.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "recipes/judge_constrained_vs_free.yaml"
BEGIN, END = "<!-- make-eval:begin -->", "<!-- make-eval:end -->"
IMAGES = ROOT / "docs" / "images"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()}, Python {platform.python_version()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = (
        " (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else ""
    )
    return sha + dirty


def excerpt(output: str, root: Path) -> str:
    """The printed summary without progress bars, Dagster log lines and run ids; paths
    relative to the output folder."""
    keep = []
    for line in output.splitlines():
        if "\r" in line or line.startswith(("generating", "judging")):
            continue
        if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .* - dagster - ", line):
            continue
        if line.startswith("Dagster runs:"):
            continue
        keep.append(line.replace(str(root) + os.sep, ""))
    text = "\n".join(keep).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def screenshot(report: Path, target: Path) -> bool:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        return False
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",  # Chromium's sandbox refuses root
                # nothing fetched: no updates, sync or background requests
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={target}",
                "--window-size=1280,2000",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return target.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-outputs", action="store_true", help="keep the run's folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="nova-eval-readme-"))
    env = {
        **os.environ,
        "NOVA_EVAL_OUTPUT_ROOT": str(work / "outputs"),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    (work / "dagster_home").mkdir()
    nova_eval = Path(sys.executable).parent / "nova-eval"
    started = time.monotonic()
    run = subprocess.run(
        [str(nova_eval), "run", RECIPE, "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n", file=sys.stderr)
        return run.returncode
    stamp = (
        f"Produced by `tools/readme_run.py` on {time.strftime('%Y-%m-%d')} at commit "
        f"{commit()}, on {machine()}: {seconds / 60:.1f} minutes wall for the whole job."
    )
    block = f"{BEGIN}\n{stamp}\n\n```text\n{excerpt(run.stdout, work / 'outputs')}\n```\n{END}"
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")

    analysis = work / "outputs" / "support_tickets_constrained" / "eval_results" / "analysis"
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in ("reliability", "coverage"):
        shutil.copyfile(analysis / f"{name}.png", IMAGES / f"constrained_{name}.png")
    shot = screenshot(analysis / "report.html", IMAGES / "constrained_report.png")
    made = f"{time.strftime('%Y-%m-%d')}, commit {commit()}, {machine()}"
    what = "reliability diagram and coverage curve, as its analysis wrote them"
    if shot:
        what += ", and a screenshot of its HTML report"
    (IMAGES / "README.md").write_text(
        f"# Images of a real run\n\nThe constrained run's {what}: written by "
        f"`tools/readme_run.py` ({made}).\n",
        encoding="utf-8",
    )
    print(f"README.md updated; images in {IMAGES.relative_to(ROOT)} (screenshot: {shot})")
    if args.keep_outputs:
        print(f"outputs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
