"""Mutation testing of the decision code: runs mutmut over DECISION_CODE, then writes the
score per module from what it left under mutants/.

Writes bench/results/mutation.json: {"module": {"killed": n, "survived": n, "score": s,
"survivors": [mutant names]}}. A mutant no selected test reaches counts as survived; a timeout
counts as killed (the mutant made a test hang, so the suite noticed). Exits 1 when a module
scores under --target, so `make mutation` fails where the guard is too weak.

    python bench/mutation_report.py [--target 0.85] [--report-only] [--max-children N]
"""

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = {36, 24, -24, 152, 255}
KILLED = {1, 3, 37} | TIMEOUT  # mutmut's exit codes: failed, type check, timeout
SURVIVED = {0, 5, 33}  # passed, or no test reached the mutant

# The functions that decide something (mutmut's names: module.x_function__mutmut_N). Display
# and I/O helpers in the same files (side_by_side, pair_view, generate, feedback) are left out,
# and so are @transaction.atomic services, which mutmut does not mutate.
DECISION_CODE = [
    "registry.policy.*",
    "registry.services.x_version_register__*",
    "registry.services.x__holder__*",
    "registry.services.x__locked__*",
    "registry.services.x__refuse_self_move__*",
    "registry.services.x__refuse_second_request__*",
    "registry.services.x__policy_evidence__*",
    "registry.services.x__move__*",
    "registry.services.x__validate_alias__*",
    "registry.services.x_alias_promote__*",
    "registry.services.x_alias_rollback__*",
    "evaluation.statistics.*",
    *(
        f"evaluation.comparisons.x_{name}__*"
        for name in (
            "_reusable_evaluation",
            "_calibration",
            "next_pair",
            "_outcomes",
            "human_results",
            "_ratings",
            "_kappa",
        )
    ),
    *(
        f"evaluation.comparison_results.x_{name}__*"
        for name in ("comparison_score", "evaluations_of", "scored_require", "auto_results")
    ),
    "evaluation.metrics.*",
    "datasets_app.formats.*",
    "datasets_app.parsing.*",
    "datasets_app.validation.*",
    *(
        f"experiments.training.queue.x_{name}__*"
        for name in (
            "_queued_candidates",
            "run_claim",
            "run_finish",
            "run_requeue_or_fail",
            "runs_reap_stale",
            "dispatch_on_commit",
        )
    ),
]


# Display metadata inside those modules: the description and citation a metric module shows
# (evaluate's MetricInfo). Nothing is decided by them.
NOT_DECISIONS = [
    "evaluation.metrics.x_text_pair_info__*",
    "evaluation.metrics.sacrebleu_module.x_info__*",
]


def is_decision(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in DECISION_CODE) and not any(
        fnmatch.fnmatch(name, p) for p in NOT_DECISIONS
    )


def to_run(mutants: Path) -> list[str]:
    """The decision mutants without a verdict yet, and the timeouts (a loaded machine can
    time a session out): a second `make mutation` resumes instead of starting over. Empty
    when mutmut has not generated mutants yet (then the patterns are passed)."""
    pending = []
    for meta in mutants.rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if is_decision(name) and (code is None or code in TIMEOUT):
                pending.append(name)
    return pending


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def collect(mutants: Path, files: list[str]) -> dict:
    report = {}
    for path in files:
        meta = mutants / f"{path}.meta"
        if not meta.exists():
            continue
        codes = {
            name: code
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()
            if is_decision(name)
        }
        killed = sorted(k for k, code in codes.items() if code in KILLED)
        survived = sorted(k for k, code in codes.items() if code in SURVIVED)
        unchecked = sorted(k for k in codes if k not in killed and k not in survived)
        tested = len(killed) + len(survived)
        report[module_name(path)] = {
            "killed": len(killed),
            "survived": len(survived),
            "score": round(len(killed) / tested, 4) if tested else None,
            "survivors": survived,
            **({"not_checked": unchecked} if unchecked else {}),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/mutation.json")
    parser.add_argument("--report-only", action="store_true", help="do not run mutmut")
    parser.add_argument("--max-children", type=int, default=os.cpu_count())
    parser.add_argument(
        "--only", nargs="+", default=[], help="run only these modules (e.g. registry.policy)"
    )
    args = parser.parse_args()

    if not args.report_only:
        mutmut = Path(sys.executable).with_name("mutmut")
        names = to_run(ROOT / "mutants") or DECISION_CODE
        if args.only:
            names = [n for n in names if any(n.startswith(f"{m}.") for m in args.only)]
        subprocess.run(
            [mutmut, "run", "--max-children", str(args.max_children), *names],
            cwd=ROOT,
            check=True,
        )

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    report = collect(ROOT / "mutants", config["only_mutate"])
    if not report:
        print("No mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    below = []
    print(f"{'module':45} {'killed':>7} {'survived':>9} {'score':>7}")
    for name, row in report.items():
        score = row["score"]
        print(f"{name:45} {row['killed']:7} {row['survived']:9} {score or 0:7.1%}")
        if score is None or score < args.target:
            below.append(name)
    print(f"written: {args.out.relative_to(ROOT)}")
    if below:
        print(f"under the {args.target:.0%} target: {', '.join(below)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
