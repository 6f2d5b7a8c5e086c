"""Time a cold build of the book and say where its wall time went, chapter by chapter.

Usage::

    python benchmarks/cold_build.py [--leave-out CHAPTER [CHAPTER ...]] [--parameters JSON]
                                    [--dir DIR] [--keep]

A cold build, as the issues define it, starts from an empty results store
and an empty Numba cache and runs ``jupyter-book build . -W -n --keep-going``.
To measure that, and only the committed code, the script

1. clones this repository's HEAD into a new folder (``--dir``, default a
   temporary one), removed afterwards unless ``--keep``;
2. gives the build an empty home folder (so an empty results store, MNIST
   cache and Matplotlib cache, as a new reader has: MNIST is fetched from
   PyPI as :mod:`ex3lib.data` does), an empty ``NUMBA_CACHE_DIR``, and
   ``PYTHONPATH`` set to the clone: with ``requirements.txt``'s editable
   install, Python would otherwise import the ``ex3lib`` this environment was
   installed from, whose kernels are compiled already, and the build would
   compile nothing;
3. can leave chapters out of the clone's ``_toc.yml`` (``--leave-out
   protocol conclusion`` builds the book without an issue's additions, to
   check the budget of the issues before it; ``-W`` is then left off, as the
   other chapters' cross-references to them become warnings) and set
   ``$EX3_BOOK_PARAMETERS`` (``--parameters '{"explorer": false}'``);
4. runs the build, its output on the terminal as it comes and in
   ``build.log`` in that folder, and times it.

Then it prints a table of each chapter's execution time, split into its
:func:`ex3lib.run_many` calls (their wall time, the runs they trained and
those runs' training seconds, read from the progress lines the build
prints) and the rest (kernel start-up, loading, the kernels' first
compilation in the chapter's own process, serial cells, figures); then
``build_costs.py``'s table of the training time by part of the book, from the
store the build filled. It exits with the build's status.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ex3lib.data import CACHE_ENV_VAR
from ex3lib.params import OVERRIDES_ENV_VAR
from ex3lib.runner import CHAPTER_ENV_VAR, PROGRESS_ENV_VAR, SCHEDULER_ENV_VAR, WORKERS_ENV_VAR
from ex3lib.store import RESULTS_ENV_VAR

ROOT = Path(__file__).resolve().parent.parent

#: ``…/book/sgd.ipynb: Executed notebook in 447.50 seconds [mystnb]`` (myst-nb).
EXECUTED = re.compile(r"[/\\](?P<chapter>[^/\\\s]+)\.ipynb: Executed notebook in (?P<seconds>[\d.]+) seconds")
#: ``sgd: 30 runs, 0 stored, 30 to train on 2 workers`` and ``sgd: 12 runs, all stored`` (ex3lib.runner).
STARTED = re.compile(r"^(?P<chapter>[\w.-]+): (?P<runs>\d+) runs?, (?:all stored|(?:\d+ stored, )?\d+ to train )")
#: ``sgd: 30 trained in 200 s (391 s of training)``, with ``, 1 failed`` after a failure (ex3lib.runner).
TRAINED = re.compile(r"^(?P<chapter>[\w.-]+): (?P<trained>\d+) trained in (?P<wall>\d+) s "
                     r"\((?P<training>\d+) s of training\)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Chapter:
    """What the build's log says of one chapter."""

    name: str
    executed: float | None = None  # seconds myst-nb took to execute it
    calls: int = 0  # run_many calls
    runs: int = 0  # runs those calls asked for
    trained: int = 0  # runs they trained
    in_run_many: float = 0.0  # wall seconds inside the calls that trained
    training: float = 0.0  # the trained runs' own seconds

    @property
    def rest(self) -> float | None:
        """Seconds of the chapter outside run_many's training: start-up, loading, serial cells, figures."""
        return None if self.executed is None else self.executed - self.in_run_many


def parse_log(text: str) -> dict[str, Chapter]:
    """Each chapter the build executed or trained for, in the order of the log."""
    chapters: dict[str, Chapter] = {}

    def chapter(name):
        return chapters.setdefault(name, Chapter(name))

    for line in ANSI.sub("", text).splitlines():
        line = line.strip()
        if m := EXECUTED.search(line):
            chapter(m["chapter"]).executed = float(m["seconds"])
        elif m := STARTED.match(line):
            c = chapter(m["chapter"])
            c.calls += 1
            c.runs += int(m["runs"])
        elif m := TRAINED.match(line):
            c = chapter(m["chapter"])
            c.trained += int(m["trained"])
            c.in_run_many += float(m["wall"])
            c.training += float(m["training"])
    return chapters


def toc_chapters(toc: dict) -> list[str]:
    """The chapter names (file stems) of a Jupyter Book ``_toc.yml``'s ``chapters``."""
    return [Path(entry["file"]).name for entry in toc.get("chapters", []) if "file" in entry]


def leave_out(toc: dict, names) -> dict:
    """``toc`` without the chapters ``names``; a ValueError names any that it does not list."""
    known = toc_chapters(toc)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no chapter {', '.join(map(repr, unknown))} in _toc.yml; its chapters are "
                         f"{', '.join(known)}")
    return {**toc, "chapters": [entry for entry in toc.get("chapters", [])
                                if Path(entry.get("file", "")).name not in set(names)]}


def parameters_json(text: str) -> str:
    """``--parameters``' value, checked: a JSON object (what ``$EX3_BOOK_PARAMETERS`` holds)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of chapter parameters, like "
                                         f"'{{\"explorer\": false}}'; got {text!r}")
    return json.dumps(value)


def build_environment(folder: Path, clone: Path, parameters: str | None) -> dict[str, str]:
    """The build's environment: this one with an empty home, Numba cache and results store, and the clone first."""
    env = dict(os.environ)
    for name in (CACHE_ENV_VAR, OVERRIDES_ENV_VAR, CHAPTER_ENV_VAR, "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
                 "XDG_DATA_HOME", "MPLCONFIGDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR"):
        env.pop(name, None)
    env.update({"HOME": str(folder / "home"), "NUMBA_CACHE_DIR": str(folder / "numba"), PROGRESS_ENV_VAR: "1",
                RESULTS_ENV_VAR: str(folder / "results"),
                "PYTHONPATH": os.pathsep.join([str(clone)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))})
    if parameters is not None:
        env[OVERRIDES_ENV_VAR] = parameters
    return env


def table(chapters: dict[str, Chapter], wall: float) -> str:
    """The chapters' times as a Markdown table, with the build's total and Sphinx's own share."""
    lines = ["| chapter | executed (s) | run_many calls | runs asked / trained | in run_many (s) "
             "| training core-s | rest (s) |", "|---|---|---|---|---|---|---|"]
    for c in chapters.values():
        executed = "–" if c.executed is None else f"{c.executed:,.0f}"
        rest = "–" if c.rest is None else f"{c.rest:,.0f}"
        lines.append(f"| {c.name} | {executed} | {c.calls} | {c.runs} / {c.trained} | {c.in_run_many:,.0f} "
                     f"| {c.training:,.0f} | {rest} |")
    executed = sum(c.executed or 0.0 for c in chapters.values())
    lines.append(f"| all | {executed:,.0f} | {sum(c.calls for c in chapters.values())} "
                 f"| {sum(c.runs for c in chapters.values())} / {sum(c.trained for c in chapters.values())} "
                 f"| {sum(c.in_run_many for c in chapters.values()):,.0f} "
                 f"| {sum(c.training for c in chapters.values()):,.0f} "
                 f"| {sum(c.rest or 0.0 for c in chapters.values()):,.0f} |")
    lines.append(f"\nBuild: {wall:,.0f} s ({wall / 60:.1f} min) of wall time, {executed:,.0f} s of it executing "
                 f"chapters, {wall - executed:,.0f} s Sphinx's own (start-up, reading, writing, copying).")
    return "\n".join(lines)


def _git(*args, cwd=ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def jupyter_book() -> str:
    """The ``jupyter-book`` of this Python's environment (else the one on ``PATH``); an error if neither exists."""
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if found is None:
        raise RuntimeError(f"no jupyter-book beside {sys.executable} or on PATH: install the project's "
                           f"requirements (pip install -r requirements.txt) in this environment")
    return found


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leave-out", nargs="+", default=[], metavar="CHAPTER",
                   help="chapters to leave out of _toc.yml (file names without folder or suffix, e.g. protocol)")
    p.add_argument("--parameters", type=parameters_json, default=None, metavar="JSON",
                   help="$EX3_BOOK_PARAMETERS for the build, e.g. '{\"explorer\": false}' (default: unset)")
    p.add_argument("--dir", type=Path, default=None,
                   help="folder to clone and build in; must not exist yet (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the folder (the clone, its build and store) afterwards")
    p.add_argument("--workers", type=int, default=2, help="cores, for build_costs.py's least wall time (default 2)")
    args = p.parse_args(argv)
    if args.dir is not None and args.dir.exists():
        p.error(f"--dir {args.dir} exists already; name a new folder (the build must start from nothing)")
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    try:
        toc = leave_out(toc, args.leave_out)
    except ValueError as err:
        print(f"cold_build.py: error: --leave-out: {err}", file=sys.stderr)
        return 2
    try:
        builder = jupyter_book()
        head = _git("log", "-1", "--format=%h %s")
        changed = _git("status", "--porcelain", "--untracked-files=no")
    except RuntimeError as err:
        print(f"cold_build.py: error: {err}", file=sys.stderr)
        return 2
    if changed:
        print("cold_build.py: note: the working tree has changes that are not committed; the build measures "
              f"the committed HEAD ({head.split()[0]}) only", file=sys.stderr)
    folder = (args.dir or Path(tempfile.mkdtemp(prefix="ex3-cold-build-"))).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        clone = folder / ROOT.name
        try:
            _git("clone", "--quiet", str(ROOT), str(clone))
        except RuntimeError as err:
            print(f"cold_build.py: error: {err}", file=sys.stderr)
            return 2
        for name in ("home", "numba", "results"):
            (folder / name).mkdir()
        if args.leave_out:
            (clone / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
        command = ["jupyter-book", "build", ".", "-n", "--keep-going"]
        if not args.leave_out:
            command.insert(3, "-W")
        env = build_environment(folder, clone, args.parameters)
        print(f"Cold build of {head}\n  in {clone}\n  chapters: {', '.join(toc_chapters(toc))}"
              + (f"\n  EX3_BOOK_PARAMETERS={args.parameters}" if args.parameters else "")
              + "".join(f"\n  {k}={env[k]}" for k in (WORKERS_ENV_VAR, SCHEDULER_ENV_VAR) if env.get(k))
              + f"\n  {' '.join(command)}", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        log_path = folder / "build.log"
        build = subprocess.Popen([builder, *command[1:]], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        with open(log_path, "w") as log, build:
            for line in build.stdout:
                sys.stdout.write(line)
                log.write(line)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"\n== {' '.join(command)} exited with {build.returncode} after {wall:,.0f} s "
              f"({wall / 60:.1f} min); CPU time of the build and its processes {cpu:,.0f} s\n")
        print(table(parse_log(log_path.read_text(errors="replace")), wall))
        print()
        train_size = json.loads(args.parameters or "{}").get("train_size")
        costs = subprocess.run([sys.executable, "benchmarks/build_costs.py", str(folder / "results"),
                                "--workers", str(args.workers)]
                               + (["--train-size", str(train_size)] if train_size else []),
                               cwd=clone, env=env, text=True, capture_output=True)
        print(costs.stdout + costs.stderr, end="")
        if args.keep:
            print(f"\nKept: {folder} (the build log is {log_path})")
        return build.returncode
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
