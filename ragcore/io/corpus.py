"""Reading documents, queries and relevance judgements.

Corpora are JSON Lines files (optionally gzip-compressed, detected by content) or BEIR folders
(``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``). Everything streams: a corpus is
never loaded whole. Malformed input raises ``ValueError`` naming the file and the 1-based line.

Examples
--------
>>> from ragcore.io.corpus import iter_corpus, load_queries, load_qrels   # doctest: +SKIP
>>> ids, texts = zip(*iter_corpus("data/msmarco-5k"))                  # doctest: +SKIP
>>> queries = load_queries("data/msmarco-5k")                          # doctest: +SKIP
>>> qrels = load_qrels("data/msmarco-5k", split="test")                # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Tuple, Union

__all__ = ["iter_corpus", "count_lines", "load_queries", "load_qrels"]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*(?=\n)")  # a blank line after a newline
_HEADER_WORD = re.compile(r"[A-Za-z][A-Za-z_\- ]*")
PathLike = Union[str, "os.PathLike[str]"]


def _resolve(path: Any, basename: str, what: str) -> Path:
    """``path`` itself if it is a file, else ``path/basename`` or ``path/basename.gz``."""
    p = Path(os.fspath(path))
    if p.is_dir():
        for candidate in (p / basename, p / f"{basename}.gz"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{what} not found: folder {p} has no {basename} or {basename}.gz")
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p} does not exist")
    return p


def _open(p: Path) -> IO[bytes]:
    with open(p, "rb") as f:
        magic = f.read(2)
    return gzip.open(p, "rb") if magic == _GZIP_MAGIC else open(p, "rb")


def _iter_lines(p: Path) -> Iterator[Tuple[int, str]]:
    """Yield (1-based line number, decoded line) for every non-blank line of ``p``."""
    lineno = 0
    with _open(p) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                if raw.isspace():
                    continue
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{p}:{lineno}: not valid UTF-8 ({e.reason} at byte "
                                     f"{e.start})") from None
                yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{p}: corrupt or truncated gzip data after line {lineno} ({e})") from None


def _iter_records(p: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    for lineno, line in _iter_lines(p):
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{p}:{lineno}: invalid JSON ({e})") from None
        except RecursionError:   # json's parser recurses once per nesting level
            raise ValueError(f"{p}:{lineno}: invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{p}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _get_id(record: Dict[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if value is None:
        raise ValueError(f"{where}: missing {field!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: {field!r} must be a string or an integer, got "
                         f"{type(value).__name__}")
    value = str(value)
    if not value:
        raise ValueError(f"{where}: {field!r} is empty")
    return value


def _get_text(record: Dict[str, Any], field: str, where: str, required: bool = True) -> str:
    if field not in record or record[field] is None:
        if required:
            raise ValueError(f"{where}: missing {field!r}")
        return ""
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
    return value


def iter_corpus(path: PathLike, *, title_field: str = "title", text_field: str = "text",
                id_field: str = "_id") -> Iterator[Tuple[str, str]]:
    """Stream ``(doc_id, text)`` pairs from a JSONL corpus or a BEIR folder.

    Parameters
    ----------
    path : str or path-like
        A JSON Lines file, one object per line (gzip-compressed or not), or a BEIR folder
        containing ``corpus.jsonl`` or ``corpus.jsonl.gz``.
    title_field, text_field, id_field : str
        Field names. The id may be a string or an integer (returned as str); the title is optional.

    Yields
    ------
    doc_id : str
    text : str
        ``title + " " + text`` when the title is present and non-empty, else ``text``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or the folder has no corpus file.
    ValueError
        A malformed line: invalid UTF-8 or JSON, not an object, missing or empty id, missing text,
        or a text or title that is not a string. The message is ``"<file>:<line>: <problem>"``.
        Blank lines are skipped (they still count in line numbers).
    """
    p = _resolve(path, "corpus.jsonl", "corpus")
    for lineno, record in _iter_records(p):
        where = f"{p}:{lineno}"
        doc_id = _get_id(record, id_field, where)
        text = _get_text(record, text_field, where)
        title = _get_text(record, title_field, where, required=False)
        yield doc_id, (f"{title} {text}" if title else text)


def count_lines(path: PathLike) -> int:
    """Count the non-blank lines (records) of a corpus file or BEIR folder, quickly.

    Reads bytes in chunks without decoding or parsing, e.g. to size a progress bar. For a
    well-formed file this equals the number of records :func:`iter_corpus` yields.

    Parameters
    ----------
    path : str or path-like
        As for :func:`iter_corpus`.

    Returns
    -------
    int
        The number of lines containing something other than ASCII whitespace.
    """
    p = _resolve(path, "corpus.jsonl", "corpus")
    count, pending = 0, False  # pending: the current unfinished line has non-blank content
    with _open(p) as f:
        while True:
            try:
                chunk = f.read(_CHUNK)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise ValueError(f"{p}: corrupt or truncated gzip data after {count} lines ({e})") from None
            if not chunk:
                break
            first = chunk.find(b"\n")
            if first < 0:
                pending = pending or not chunk.isspace()
                continue
            head = chunk[:first]
            if pending or (head and not head.isspace()):
                count += 1
            last = chunk.rfind(b"\n")
            # chunk[first:last + 1] is "\n" + the complete lines after the first one
            count += chunk.count(b"\n", first + 1, last + 1)
            count -= len(_BLANK_LINE.findall(chunk, first, last + 1))
            tail = chunk[last + 1:]
            pending = bool(tail) and not tail.isspace()
    return count + pending


def load_queries(path: PathLike, *, id_field: str = "_id", text_field: str = "text") -> Dict[str, str]:
    """Read queries from a JSONL file or a BEIR folder.

    Parameters
    ----------
    path : str or path-like
        A JSON Lines file of ``{"_id": ..., "text": ...}`` objects (gzip-compressed or not), or a
        BEIR folder containing ``queries.jsonl`` or ``queries.jsonl.gz``.
    id_field, text_field : str
        Field names.

    Returns
    -------
    dict of str to str
        Query id -> query text, in file order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or the folder has no queries file.
    ValueError
        A malformed line (as in :func:`iter_corpus`) or a duplicate query id, naming file and line.
    """
    p = _resolve(path, "queries.jsonl", "queries")
    queries: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    for lineno, record in _iter_records(p):
        where = f"{p}:{lineno}"
        qid = _get_id(record, id_field, where)
        if qid in queries:
            raise ValueError(f"{where}: duplicate query id {qid!r} (first on line {first_line[qid]})")
        queries[qid] = _get_text(record, text_field, where)
        first_line[qid] = lineno
    return queries


def _parse_score(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        f = math.nan
    if not math.isfinite(f) or not f.is_integer():
        raise ValueError(f"{where}: score {value!r} is not an integer")
    return int(f)


def load_qrels(path: PathLike, split: str = "test") -> Dict[str, Dict[str, int]]:
    """Read relevance judgements (qrels) from a TSV file or a BEIR folder.

    Parameters
    ----------
    path : str or path-like
        A file with one judgement per line, ``query-id<TAB>corpus-id<TAB>score`` (BEIR; lines
        without tabs are split on whitespace), or the 4-column TREC form
        ``query-id iteration corpus-id score``. A first line whose score column is a word (such as
        the BEIR header ``query-id corpus-id score``) is a header and is skipped. Gzip is detected.
        Or a BEIR folder, read at ``<path>/qrels/<split>.tsv`` (or ``.tsv.gz``).
    split : str, default "test"
        The split to read from a BEIR folder; ignored when ``path`` is a file.

    Returns
    -------
    dict of str to dict of str to int
        ``qrels[query_id][doc_id] = score``, including zero and negative scores.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or the folder has no such split.
    ValueError
        A malformed row (wrong number of columns, empty id), a score that is not an integer
        (integral floats like ``"1.0"`` are accepted), or a duplicate (query, document) pair. The
        message names the file and the 1-based line.
    """
    p = Path(os.fspath(path))
    if p.is_dir():
        if not split or "/" in split or "\\" in split or split in (".", ".."):
            raise ValueError(f"split must be a plain name such as 'test', got {split!r}")
        p = _resolve(p, f"qrels/{split}.tsv", f"qrels split {split!r}")
    elif not p.exists():
        raise FileNotFoundError(f"qrels not found: {p} does not exist")
    qrels: Dict[str, Dict[str, int]] = {}
    first_line: Dict[Tuple[str, str], int] = {}
    first = True
    for lineno, line in _iter_lines(p):
        where = f"{p}:{lineno}"
        fields = line.rstrip().split("\t") if "\t" in line else line.split()
        fields = [x.strip() for x in fields]
        if len(fields) == 4:
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 3 columns (query-id, corpus-id, score) or 4 (TREC), "
                             f"got {len(fields)}")
        qid, did, score = fields
        if first:
            first = False
            if _HEADER_WORD.fullmatch(score) and score.lower() not in ("nan", "inf", "infinity"):
                continue
        if not qid or not did:
            raise ValueError(f"{where}: empty {'query' if not qid else 'corpus'} id")
        value = _parse_score(score, where)
        if (qid, did) in first_line:
            raise ValueError(f"{where}: duplicate judgement for query {qid!r} and document {did!r} "
                             f"(first on line {first_line[qid, did]})")
        first_line[qid, did] = lineno
        qrels.setdefault(qid, {})[did] = value
    return qrels


def pydoc_passages(max_words: int = 120) -> List[Tuple[str, str, str]]:
    """The embedded default corpus: Python's own documentation topics, split into passages.

    Every CPython ships ``pydoc_data.topics`` (the text behind ``help("with")``). Each topic is
    split on blank lines into paragraphs, which are packed into passages of at most about
    ``max_words`` words (a longer paragraph is its own passage).

    Returns
    -------
    list of (passage_id, title, text)
        ``passage_id`` is ``"<topic>#<n>"``; ``title`` is the topic's heading line.

    Examples
    --------
    >>> from ragcore.io.corpus import pydoc_passages
    >>> pid, title, text = pydoc_passages()[0]
    >>> pid.endswith("#0")
    True
    """
    from pydoc_data.topics import topics

    out: List[Tuple[str, str, str]] = []
    for topic in sorted(topics):
        body = topics[topic].strip()
        title = body.splitlines()[0].strip() if body else topic
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        passages: List[List[str]] = [[]]
        n_words = 0
        for para in paragraphs:
            w = len(para.split())
            if passages[-1] and n_words + w > max_words:
                passages.append([])
                n_words = 0
            passages[-1].append(para)
            n_words += w
        out += [(f"{topic}#{i}", title, "\n\n".join(p)) for i, p in enumerate(passages) if p]
    return out
