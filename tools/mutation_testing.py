"""Mutation testing of peft-interp's core modules with cosmic-ray, sampled so that a run fits in an hour on 2 CPUs.

A *mutant* is a copy of the code with one realistic one-line bug planted (``+`` -> ``-``, ``<`` -> ``<=``, a
constant off by one, ``True`` -> ``False``, a loop that never runs, a removed ``@torch.no_grad``, ...). The test
files of the mutated module run against each mutant; a mutant is *killed* when a test fails (or the run times out)
and *survives* otherwise. The score of a module group is ``killed / (killed + survived)``; mutants that do not even
import (*incompetent*) are left out of it.

How the run is kept short:

* only the operators below (realistic bugs; cosmic-ray's swaps to bit-shifts / bitwise operators or ``is``, which
  fail at once on tensors and floats, are left out);
* per module group a seeded random sample of ``--per-group`` mutants (default 10);
* each mutant runs only the group's own test files, with ``pytest -x`` (stops at the first failure) and a timeout
  of 3x the group's baseline run;
* a fork server imports torch, transformers, PEFT, datasets and pytest once; each mutant's test run is a fork of it
  that imports only ``peft_interp`` (mutated, from disk) and the tests: seconds instead of a cold start.

It works on a copy of the repository's committed ``HEAD`` (``git archive``) in ``--workdir``, never on the checkout:
cosmic-ray edits files in place. Usage (``pip install -e ".[mutation]"``)::

    python tools/mutation_testing.py                            # all groups, 10 mutants each
    python tools/mutation_testing.py --groups ivpt sharing --per-group 30 --seed 1
    python tools/mutation_testing.py --report                   # the scores and survivors of the last run
    python tools/mutation_testing.py --rerun-survivors          # after adding tests: the last run's survivors again

The report (``--workdir``/report.md) lists every surviving mutant with its diff, to be judged: a mutant that
cannot change any observable behaviour (an *equivalent* mutant) is not a missing test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# group -> (mutated paths, test files run against each mutant: the fastest and most targeted first)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "ivpt": (["peft_interp/tuners/ivpt"],
             ["tests/test_ivpt_functional.py", "tests/test_ivpt_loss_references.py", "tests/test_ivpt_wiring.py",
              "tests/test_gradient_routes.py", "tests/test_ivpt_model.py"]),
    "visual_core": (["peft_interp/tuners/vpt", "peft_interp/tuners/visual", "peft_interp/tuners/layers.py",
                     "peft_interp/tuners/base.py", "peft_interp/tuners/recipe.py"],
                    ["tests/test_prompt_layer.py", "tests/test_edges.py", "tests/test_gradient_routes.py",
                     "tests/test_loading_routes.py",
                     "tests/test_ivpt_model.py", "tests/test_registration.py", "tests/test_trainer_schedule.py",
                     *(f"tests/test_training.py::test_{name}" for name in (
                         "coop_recipe_warms_up_at_constant_lr_then_follows_a_cosine",
                         "ivpt_recipe_halves_the_lr_every_four_epochs", "recipe_errors_name_the_field",
                         "trainer_builds_the_methods_optimiser_and_param_groups"))]),
    "clip_prompt": (["peft_interp/tuners/clip_prompt", "peft_interp/tuners/coop"],
                    ["tests/test_edges.py", "tests/test_clip_prompt.py", "tests/test_caches.py",
                     "tests/test_clip_weights.py", "tests/test_gradient_routes.py", "tests/test_sharing.py"]),
    "intcoop": (["peft_interp/tuners/intcoop"],
                ["tests/test_intcoop_details.py", "tests/test_clip_weights.py", "tests/test_gradient_routes.py",
                 "tests/test_intcoop.py", "tests/test_caches.py"]),
    "dualview_mi": (["peft_interp/tuners/dualview_mi"],
                    ["tests/test_dualview_mi.py", "tests/test_clip_weights.py", "tests/test_gradient_routes.py",
                     "tests/test_caches.py"]),
    "ipl": (["peft_interp/tuners/ipl"], ["tests/test_ipl.py", "tests/test_prompt_metrics.py"]),
    "training": (["peft_interp/training"],
                 ["tests/test_trainer_schedule.py", "tests/test_training.py", "tests/test_data_and_cli.py",
                  "tests/test_evaluation_runner.py"]),
    "evaluation": (["peft_interp/evaluation"],
                   ["tests/test_evaluation_edges.py", "tests/test_evaluation_metrics.py",
                    "tests/test_evaluation_runner.py"]),
    "sharing": (["peft_interp/sharing.py"],
                ["tests/test_sharing_details.py", "tests/test_sharing.py", "tests/test_loading_routes.py"]),
    "tokenizer": (["peft_interp/data/tokenizer.py"], ["tests/test_tokenizer_details.py", "tests/test_clip_tokenizer.py"]),
}  # fmt: skip

ARITHMETIC = "Add|Sub|Mul|Div|FloorDiv|Mod|Pow"
COMPARISON = "Eq|NotEq|Lt|LtE|Gt|GtE"
REALISTIC_OPERATORS = re.compile(
    rf"core/(ReplaceBinaryOperator_({ARITHMETIC})_({ARITHMETIC})"
    rf"|ReplaceComparisonOperator_({COMPARISON})_({COMPARISON})|ReplaceComparisonOperator_(Is_IsNot|IsNot_Is)"
    r"|ReplaceUnaryOperator_(USub_UAdd|Delete_USub|Delete_Not)|AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue"
    r"|ReplaceAndWithOr|ReplaceOrWithAnd|ReplaceBreakWithContinue|ReplaceContinueWithBreak|NumberReplacer"
    r"|ZeroIterationForLoop|RemoveDecorator|ExceptionReplacer)$"
)


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-W", "ignore"]
WARM_IMPORTS = ("torch", "numpy", "PIL.Image", "transformers", "peft", "accelerate", "datasets", "evaluate",
                "safetensors.torch", "huggingface_hub", "pytest", "tqdm.auto", "yaml", "jinja2")  # fmt: skip


def pytest_command(test_files: list[str], server: Path | None = None) -> str:
    """The test command of a group: through the fork server when one runs, else a plain pytest process."""
    if server is None:
        return f"{sys.executable} -m pytest " + " ".join(PYTEST_ARGS + test_files)
    return f"{sys.executable} {Path(__file__).resolve()} --client {server} " + " ".join(test_files)


# ------------------------------------------------------------------------------------------------ fork server
def serve(path: Path, source: Path) -> None:
    """Import the heavy dependencies once, then for every request fork a child that runs pytest in ``source``."""
    import importlib

    for name in WARM_IMPORTS:
        importlib.import_module(name)
    import transformers  # the lazy model classes the tests build

    for name in ("CLIPModel", "CLIPVisionModel", "Dinov2Model", "Dinov2WithRegistersModel", "CLIPTokenizer"):
        getattr(transformers, name)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    while True:
        connection, _ = listener.accept()
        with connection:
            request = json.loads(connection.makefile().readline())
            pid = os.fork()
            if pid == 0:  # the child: a fresh session, so that a timeout can end its subprocesses too
                listener.close()
                os.setsid()
                os.chdir(source)
                sys.argv = ["pytest"]
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1), os.dup2(devnull, 2)
                import pytest

                code = 1
                try:
                    code = int(pytest.main(PYTEST_ARGS + request["tests"]))
                finally:
                    os._exit(code)
            code = _wait_or_kill(pid, connection)
            if code is not None:
                connection.sendall(f"{code}\n".encode())


def _wait_or_kill(pid: int, connection: socket.socket) -> int | None:
    """The child's exit code; if the client goes away first (cosmic-ray's timeout), kill the child's session."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([connection], [], [], 0.2)
        if readable and not connection.recv(1, socket.MSG_PEEK):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None


def client(path: Path, tests: list[str]) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(str(path))
        connection.sendall((json.dumps({"tests": tests}) + "\n").encode())
        answer = connection.makefile().readline()
    return int(answer) if answer.strip() else 1


def start_server(workdir: Path, source: Path) -> tuple[subprocess.Popen, Path]:
    path = workdir / "fork-server.sock"
    path.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(path), str(source)],
                               cwd=source, env=environment(source))  # fmt: skip
    for _ in range(600):
        if path.exists():
            return process, path
        if process.poll() is not None:
            raise SystemExit("The fork server did not start.")
        time.sleep(0.5)
    raise SystemExit("The fork server did not start within 5 minutes.")


def copy_head(workdir: Path) -> Path:
    """The repository's committed HEAD, unpacked in ``workdir/src``."""
    source = workdir / "src"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    return source


def environment(source: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")  # fmt: skip
    return env


def baseline_seconds(source: Path, test_files: list[str], server: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(pytest_command(test_files, server), shell=True, cwd=source, env=environment(source))
    if result.returncode != 0:
        raise SystemExit(f"The unmutated tests fail ({test_files}): run {pytest_command(test_files)} in {source}.")
    return time.perf_counter() - start


def write_config(path: Path, modules: list[str], test_command: str, timeout: float) -> None:
    module_list = ", ".join(f'"{m}"' for m in modules)
    path.write_text(
        "[cosmic-ray]\n"
        f"module-path = [{module_list}]\n"
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {test_command!r}\n".replace("'", '"')
        + "\n[cosmic-ray.distributor]\nname = \"local\"\n"
    )


def sample(session: Path, per_group: int, seed: int) -> tuple[int, int]:
    """Mark every mutant but a seeded sample of the realistic ones as skipped; returns (realistic, sampled)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        items = sorted(db.work_items, key=lambda item: (str(item.mutations[0].module_path), item.mutations[0].start_pos,
                                                         item.mutations[0].operator_name))  # fmt: skip
        realistic = [item for item in items if REALISTIC_OPERATORS.match(item.mutations[0].operator_name)]
        chosen = {item.job_id for item in random.Random(seed).sample(realistic, min(per_group, len(realistic)))}
        skipped = [item.job_id for item in items if item.job_id not in chosen]
        db.set_multiple_results(skipped, WorkResult(output="not sampled", worker_outcome=WorkerOutcome.SKIPPED))
    return len(realistic), len(chosen)


def reopen_survivors(session: Path) -> int:
    """Mark the surviving mutants of a session as not yet run (after tests were added); returns their number."""
    from cosmic_ray.work_db import WorkDB, WorkResultStorage, use_db
    from cosmic_ray.work_item import TestOutcome

    with use_db(str(session), WorkDB.Mode.open) as db, db._session_maker.begin() as rows:
        survived = rows.query(WorkResultStorage).filter(WorkResultStorage.test_outcome == TestOutcome.SURVIVED)
        return survived.delete()


def run_group(name: str, source: Path, workdir: Path, per_group: int, seed: int, server: Path, rerun: bool) -> None:
    modules, test_files = GROUPS[name]
    seconds = baseline_seconds(source, test_files, server)
    config, session = workdir / f"{name}.toml", workdir / f"{name}.sqlite"
    command = pytest_command(test_files, server)
    write_config(config, [str(source / module) for module in modules], command, timeout=3 * seconds + 30)
    env = environment(source)
    if rerun and session.exists():  # same sample (same code, same seed): only survivors and unfinished ones run
        print(f"[{name}] baseline {seconds:.0f} s; {reopen_survivors(session)} survivors run again", flush=True)
    else:
        session.unlink(missing_ok=True)
        subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=source, env=env, check=True)
        realistic, chosen = sample(session, per_group, seed)
        print(f"[{name}] baseline {seconds:.0f} s; {chosen} of {realistic} realistic mutants sampled", flush=True)
    subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=source, env=env, check=True)


def results(workdir: Path) -> dict[str, dict]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    summary = {}
    for name in GROUPS:
        session = workdir / f"{name}.sqlite"
        if not session.exists():
            continue
        counts = {"killed": 0, "survived": 0, "incompetent": 0, "pending": 0}
        survivors = []
        with use_db(str(session), WorkDB.Mode.open) as db:
            done = {item.job_id: result for item, result in db.completed_work_items}
            for item in db.work_items:
                result = done.get(item.job_id)
                if result is None:
                    counts["pending"] += 1
                elif result.worker_outcome == WorkerOutcome.SKIPPED:
                    continue
                elif result.test_outcome == TestOutcome.SURVIVED:
                    counts["survived"] += 1
                    mutation = item.mutations[0]
                    survivors.append((mutation.module_path, mutation.start_pos[0], mutation.operator_name, result.diff))
                elif result.test_outcome == TestOutcome.INCOMPETENT:
                    counts["incompetent"] += 1
                else:
                    counts["killed"] += 1
        summary[name] = {**counts, "survivors": sorted(survivors)}
    return summary


def report(workdir: Path) -> str:
    lines = ["| group | killed | survived | incompetent | pending | score |", "|---|---|---|---|---|---|"]
    details = []
    total_killed = total_scored = 0
    for name, counts in results(workdir).items():
        scored = counts["killed"] + counts["survived"]
        total_killed, total_scored = total_killed + counts["killed"], total_scored + scored
        score = f"{counts['killed'] / scored:.0%}" if scored else "-"
        lines.append(f"| {name} | {counts['killed']} | {counts['survived']} | {counts['incompetent']} | "
                     f"{counts['pending']} | {score} |")  # fmt: skip
        for path, line, operator, diff in counts["survivors"]:
            details.append(f"### {name}: {path}:{line} ({operator})\n\n```diff\n{diff.strip()}\n```\n")
    if total_scored:
        lines.append(f"| all | {total_killed} | {total_scored - total_killed} | | | {total_killed / total_scored:.0%} |")
    return "\n".join(lines) + "\n\n## Surviving mutants\n\n" + ("\n".join(details) or "None.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument("--per-group", type=int, default=10, help="mutants sampled per group")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/peft-interp-mutation"))
    parser.add_argument("--report", action="store_true", help="only print the report of the last run")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="after adding tests: run the last run's survivors (and unfinished mutants) again")
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)  # internal: socket, source
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)  # internal: socket; tests follow
    args, tests = parser.parse_known_args()
    if args.client:
        sys.exit(client(args.client, tests))
    if args.serve:
        return serve(*args.serve)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.report:
        source = copy_head(args.workdir)
        process, server = start_server(args.workdir, source)
        try:
            for name in args.groups:
                run_group(name, source, args.workdir, args.per_group, args.seed, server, args.rerun_survivors)
        finally:
            process.kill()
    text = report(args.workdir)
    (args.workdir / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
