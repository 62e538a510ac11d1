"""The mutation score per module, from what `mutmut run` left under mutants/.

Writes bench/results/mutation.json: {"module": {"killed": n, "survived": n, "score": s,
"survivors": [mutant names]}}. A mutant no selected test reaches counts as survived; a timeout
counts as killed (the mutant made a test hang, so the suite noticed). Exits 1 when a module
scores under --target, so `make mutation` fails where the guard is too weak.

    python bench/mutation_report.py [--target 0.85]
"""

import argparse
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # mutmut's exit codes: failed, timeout, type check
SURVIVED = {0, 5, 33}  # passed, or no test reached the mutant


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def collect(mutants: Path, files: list[str]) -> dict:
    report = {}
    for path in files:
        meta = mutants / f"{path}.meta"
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
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
    args = parser.parse_args()

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
