"""Problems for verl: ``python -m purerl.integrations.verl.data IN OUT.parquet [--data_source NAME]``.

Reads anything ``purerl.io.data`` reads (JSON, JSONL, parquet, ``datasets`` folders; its field mapping)
and writes the rows verl's RL dataset expects: ``prompt`` (chat messages with the boxed-answer system
prompt), ``data_source`` (which of verl's rule-based scorers grades it), ``reward_model.ground_truth``
(None for a row without an answer: it gets process rewards only) and ``extra_info.question``, the bare
problem the ``pure`` reward manager hands the PRM.
"""

from __future__ import annotations

import argparse
import sys

from purerl.io.data import DataConfig, load_examples
from purerl.tasks.prompts import COT_SYSTEM


def verl_rows(path: str, data_source: str = "lighteval/MATH", system: str = COT_SYSTEM) -> list[dict]:
    """The rows of ``path`` in verl's layout."""
    rows = []
    for e in load_examples(DataConfig(path=path)):
        answer = e.answer[0] if e.answer else None
        rows.append({
            "data_source": data_source,
            "prompt": [{"role": "system", "content": system}, {"role": "user", "content": e.question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"question": e.question, "index": e.row},
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m purerl.integrations.verl.data", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a file or folder purerl.io.data reads")
    parser.add_argument("out", help="the parquet file to write")
    parser.add_argument("--data_source", default="lighteval/MATH", help="verl's scorer for the rows")
    args = parser.parse_args(argv)
    try:
        rows = verl_rows(args.source, args.data_source)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), args.out)
    print(f"{len(rows)} rows -> {args.out} ({sum(r['reward_model']['ground_truth'] is not None for r in rows)} "
          "with a ground truth)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
