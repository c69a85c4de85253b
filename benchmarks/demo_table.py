"""Print the demo's results table as Markdown, from the ``results.json`` of a ``peft-interp demo`` run.

    peft-interp demo --output-dir outputs/demo && python benchmarks/demo_table.py outputs/demo/results.json

The README's demo table is this script's output on a fresh clone (accuracy-like figures in percent, 0-100).
"""

import json
import sys
from pathlib import Path

from peft_interp.demo import markdown_table


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/demo_table.py RESULTS_JSON")
    results = json.loads(Path(sys.argv[1]).read_text())
    print(markdown_table(results["rows"]))
    for note in results.get("notes", []):
        print(f"- {note}")


if __name__ == "__main__":
    main()
