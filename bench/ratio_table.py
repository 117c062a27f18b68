"""The summary table of an alternating-rounds bench (bench_alternate in common.sh): per context,
the median decode_ms of two sides over the rounds, the median of the per-round ratios, and each
round's ratio.

    python3 ratio_table.py RESULTS FIELD TITLE "A column=A value" "B column=B value" RATIO RATIO_COLUMN ROUNDS_COLUMN

FIELD is the key that tells the sides apart in each JSON line ("side", "graph"); RATIO is a/b or
b/a (which side's ms goes on top). Standard library only.
"""

import json
import statistics
import sys


def main() -> None:
    results, field, title, a, b, ratio, ratio_column, rounds_column = sys.argv[1:]
    (a_column, a_value), (b_column, b_value) = a.rsplit("=", 1), b.rsplit("=", 1)
    rows = [json.loads(line) for line in open(results) if line.startswith("{")]
    print(f"\n{title}")
    print(f"| context | {a_column} | {b_column} | {ratio_column} | {rounds_column} |")
    print("|---|---|---|---|---|")
    for context in sorted({r["context"] for r in rows}):
        def by(value):
            return {r["round"]: r["decode_ms"] for r in rows if r["context"] == context and r[field] == value}

        side_a, side_b = by(a_value), by(b_value)
        top, bottom = (side_a, side_b) if ratio == "a/b" else (side_b, side_a)
        ratios = [top[k] / bottom[k] for k in sorted(side_a) if k in side_b]
        print(f"| {context} | {statistics.median(side_a.values()):.2f} | {statistics.median(side_b.values()):.2f} "
              f"| {statistics.median(ratios):.3f} | {' '.join(f'{r:.2f}' for r in ratios)} |")


if __name__ == "__main__":
    main()
