"""Every Python example in the README runs as written.

Each ```python block runs in a fresh namespace, in a temporary working directory that holds a small BEIR
folder named ``my-beir-folder`` (the README's examples take any BEIR folder by that name). A block
that needs an optional model or package which is not installed skips, naming it; any other error fails.
"""
import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _beir(folder: Path) -> None:
    docs = [("d1", "Paris", "Paris is the capital and largest city of France."),
            ("d2", "Berlin", "Berlin is the capital of Germany and its largest city."),
            ("d3", "Cheese", "France produces hundreds of kinds of cheese."),
            ("d4", "Rivers", "The Seine flows through Paris; the Spree flows through Berlin."),
            ("d5", "Python", "The with statement wraps a block with methods of a context manager.")]
    queries = [("q1", "capital of France"), ("q2", "largest city of Germany"), ("q3", "river in Paris")]
    qrels = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d4", 1)]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                 for i, t, x in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                               "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i, tmp_path, monkeypatch):
    _beir(tmp_path / "my-beir-folder")
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[i]
    try:
        exec(compile(code, f"README.md python block {i + 1}", "exec"), {"__name__": f"readme_{i}"})
    except ImportError as e:  # an optional extra or model that this environment lacks
        pytest.skip(f"README block {i + 1} needs what is not installed: {e}")
