"""Print the fault corpus as a markdown table: ``python tests/faults/table.py FILE``.

FILE comes from ``FMRI_ICA_FAULT_TABLE=FILE pytest tests/faults`` (one JSON line per CLI call);
the last call of each test is its case.
"""

import collections
import json
import re
import sys

TEMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/ ]+/")


def main(path: str) -> None:
    cases = {}
    for line in open(path):
        row = json.loads(line)
        cases[row["test"]] = row
    print("| case | command | exit | message (first 110 characters) |\n|---|---|---|---|")
    for test, row in cases.items():
        name = test.split("::", 1)[1]
        message = TEMP.sub(".../", row["message"]).replace("|", "/")[:110] or "(none: success)"
        print(f"| {name} | {row['command']} | {row['code']} | {message} |")
    counts = collections.Counter(row["code"] for row in cases.values())
    print(f"\n{len(cases)} cases through the CLI; exit codes: "
          + ", ".join(f"{code}: {n}" for code, n in sorted(counts.items(), key=str)))


if __name__ == "__main__":
    main(sys.argv[1])
