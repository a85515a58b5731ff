"""Reading datasets: SQuAD-format JSON files and hub datasets converted to the same layout.

Every source is held as a SQuAD-format dict ``{"version", "data": [{"title", "paragraphs": [{"context",
"qas": [...]}]}]}`` (:data:`SquadDataset`); a hub dataset is read offline from the local cache
unless the hub's hosts resolve. Step 1 of :func:`mrcbench.data.splits.prepare_splits`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mrcbench.errors import MrcbenchError

SquadDataset = dict[str, Any]
"""A SQuAD-format dict: ``{"version": str, "data": [article, ...]}``."""


METRICS = ("squad", "squad_v2", "cmrc2018", "mlqa")


# The version string each metric's official data files carry; used for datasets converted from the hub.
# (mlqa: the datasets scored with it here are XQuAD, whose files say 1.1; MLQA's own files say 1.0.)
_HUB_VERSION = {"squad": "1.1", "squad_v2": "v2.0", "cmrc2018": "v1.0", "mlqa": "1.1"}


# ---------------------------------------------------------------------------------------------------------
# Reading: local JSON files and the hub
# ---------------------------------------------------------------------------------------------------------


def load_squad_json(path: str | Path, config_key: str | None = None) -> SquadDataset:
    """Read a SQuAD-format JSON file and check its structure.

    Structural problems (invalid JSON, missing keys, wrong types) are not data-quality issues that one
    could skip: they mean the file is not SQuAD JSON at all, so they always raise, naming the file and the
    JSON path of the first problem (``data[3].paragraphs[0].qas[2]: missing 'id'``). Content problems
    (misaligned answers, duplicate ids, ...) are left to :func:`validate`.
    """
    path = Path(path)
    where = f"{config_key}: " if config_key else ""
    if not path.is_file():
        raise MrcbenchError(f"{where}dataset file not found: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            dataset = json.load(handle)
    except json.JSONDecodeError as exc:
        raise MrcbenchError(
            f"{where}{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise MrcbenchError(f"{where}{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise MrcbenchError(f"{where}{path}: cannot read ({exc.strerror})") from None
    problem = structure_problem(dataset)
    if problem is not None:
        raise MrcbenchError(f"{where}{path}: not SQuAD JSON: {problem}")
    return dataset


#: The keys (and their types) each level of SQuAD JSON must have: all of them for a dataset the pipeline
#: prepares; for scoring, only those the official scripts read (:mod:`mrcbench.metrics.questions`).
_REQUIRED = {
    "article": (("title", str, "a string"), ("paragraphs", list, "a list")),
    "paragraph": (("context", str, "a string"), ("qas", list, "a list")),
    "qa": (("id", str, "a string"), ("question", str, "a string"), ("answers", list, "a list")),
    "answer": (("text", str, "a string"), ("answer_start", int, "an integer")),
}
_SCORING_OPTIONAL = {"title", "context", "question", "answer_start"}


def structure_problem(dataset: Any, scoring: bool = False) -> str | None:
    """Return ``"<json path>: <problem>"`` for the first structural problem, or None for valid SQuAD JSON.

    The one SQuAD-structure reader. ``scoring``: check only what the official scorers read (``data``,
    ``paragraphs``, ``qas``, ``id``, ``answers``, answer ``text``), as the scorers accept such files.
    """
    required = {
        level: tuple(item for item in items if not (scoring and item[0] in _SCORING_OPTIONAL))
        for level, items in _REQUIRED.items()
    }

    def check(obj: Any, where: str, key: str, kind: type | tuple[type, ...], kind_name: str) -> str | None:
        if key not in obj:
            return f"{where}: missing '{key}'"
        value = obj[key]
        # bool is an int subclass; an answer_start of true is a bug, not an offset.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{where}.{key}: expected {kind_name}, got {type(value).__name__}"
        return None

    if not isinstance(dataset, Mapping):
        return f"top level: expected an object, got {type(dataset).__name__}"
    if (problem := check(dataset, "top level", "data", list, "a list")) is not None:
        return problem.replace("top level.", "")
    if not scoring and "version" in dataset and not isinstance(dataset["version"], (str, int, float)):
        return f"version: expected a string, got {type(dataset['version']).__name__}"
    for a, article in enumerate(dataset["data"]):
        at = f"data[{a}]"
        if not isinstance(article, Mapping):
            return f"{at}: expected an object, got {type(article).__name__}"
        for key, kind, name in required["article"]:
            if (problem := check(article, at, key, kind, name)) is not None:
                return problem
        for p, paragraph in enumerate(article["paragraphs"]):
            pt = f"{at}.paragraphs[{p}]"
            if not isinstance(paragraph, Mapping):
                return f"{pt}: expected an object, got {type(paragraph).__name__}"
            for key, kind, name in required["paragraph"]:
                if (problem := check(paragraph, pt, key, kind, name)) is not None:
                    return problem
            for q, qa in enumerate(paragraph["qas"]):
                qt = f"{pt}.qas[{q}]"
                if not isinstance(qa, Mapping):
                    return f"{qt}: expected an object, got {type(qa).__name__}"
                for key, kind, name in required["qa"]:
                    if (problem := check(qa, qt, key, kind, name)) is not None:
                        return problem
                if not scoring and "is_impossible" in qa and not isinstance(qa["is_impossible"], bool):
                    kind = type(qa["is_impossible"]).__name__
                    return f"{qt}.is_impossible: expected true or false, got {kind}"
                for n, answer in enumerate(qa["answers"]):
                    nt = f"{qt}.answers[{n}]"
                    if not isinstance(answer, Mapping):
                        return f"{nt}: expected an object, got {type(answer).__name__}"
                    for key, kind, name in required["answer"]:
                        if (problem := check(answer, nt, key, kind, name)) is not None:
                            return problem
    return None


def _hub_hosts_resolve() -> bool:
    """Whether the hub's host name resolves. Without a network, ``datasets`` retries each request with
    back-off for about half a minute before failing; one failed DNS lookup tells us the same at once.
    Behind an HTTP(S) proxy the local resolver may legitimately fail, so the check is skipped there."""
    if any(
        os.environ.get(name)
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return True
    from huggingface_hub import constants  # hub datasets only

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError, OSError):
        return False
    return True


@contextlib.contextmanager
def _forced_offline() -> Iterator[None]:
    """Run ``datasets`` in offline mode (cached copies still load, anything else fails immediately).
    Both libraries read ``HF_HUB_OFFLINE`` once at import, so the module constants are switched."""
    import datasets.config  # hub datasets only: a local JSON file needs neither
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hub(hub_spec: Mapping[str, Any], key: str = "hub", metric: str | None = None) -> SquadDataset:
    """Load ``datasets.load_dataset(path, name, split)`` and convert it to a SQuAD-format dict.

    Hub QA datasets are flat (one row per question, with ``id, context, question, answers`` and usually
    ``title``; ``answers`` is ``{"text": [...], "answer_start": [...]}``). Articles and paragraphs are rebuilt
    by grouping on title and then context, in order of first appearance. Rows without a title column (the
    hub copies of XQuAD and CMRC 2018) get ``untitled-<sha1 of context>`` as title: one pseudo-article per
    paragraph, named so that titles match across datasets exactly when contexts do. For ``squad_v2`` every
    question gets ``is_impossible = (no answers)``, as in the official files.

    Any failure to fetch (no network, offline mode, unknown dataset) raises one line telling the user to
    point ``datasets.KEY.local`` at a local file instead.
    """
    if "path" not in hub_spec or "split" not in hub_spec:
        raise MrcbenchError(f"datasets.{key}.hub: needs 'path' and 'split' (got {sorted(hub_spec)})")
    path, name, split = hub_spec["path"], hub_spec.get("name"), hub_spec["split"]
    import datasets  # hub datasets only (slow to import)

    offline = (
        contextlib.nullcontext()
        if datasets.config.HF_HUB_OFFLINE or _hub_hosts_resolve()
        else _forced_offline()
    )
    kwargs = {"revision": hub_spec["revision"]} if hub_spec.get("revision") else {}
    try:
        with offline:
            rows = datasets.load_dataset(path, name, split=split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every hub failure gets the same actionable one-line message
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        raise MrcbenchError(
            f"dataset '{key}': cannot load '{path}' from the hub (no network? {cause}); "
            f"set datasets.{key}.local to a local SQuAD JSON file under the data dir"
        ) from None
    return hub_rows_to_squad(rows, key=key, metric=metric, source=f"{path}:{name or ''}:{split}")


def hub_rows_to_squad(
    rows: Iterable[Mapping[str, Any]], key: str = "hub", metric: str | None = None, source: str = "hub"
) -> SquadDataset:
    """Group flat QA rows (a ``datasets.Dataset`` or any iterable of row dicts) into SQuAD JSON."""
    column_names = getattr(rows, "column_names", None)
    required = ("id", "context", "question", "answers")
    if column_names is not None and (missing := [c for c in required if c not in column_names]):
        raise MrcbenchError(f"dataset '{key}': hub dataset {source} lacks column(s) {missing}")
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str], dict[str, Any]] = {}
    for index, row in enumerate(rows):
        if column_names is None and (missing := [c for c in required if c not in row]):
            raise MrcbenchError(f"dataset '{key}': hub row {index} of {source} lacks {missing}")
        context = row["context"]
        title = row.get("title") or f"untitled-{hashlib.sha1(context.encode('utf-8')).hexdigest()[:12]}"
        if title not in articles:
            articles[title] = {"title": title, "paragraphs": []}
        if (title, context) not in paragraphs:
            paragraphs[title, context] = {"context": context, "qas": []}
            articles[title]["paragraphs"].append(paragraphs[title, context])
        answers = row["answers"]
        if isinstance(answers, Mapping):  # datasets' Sequence-of-struct feature: a dict of lists
            answers = [
                {"text": t, "answer_start": int(s)}
                for t, s in zip(answers["text"], answers["answer_start"], strict=True)
            ]
        else:
            answers = [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in answers]
        qa: dict[str, Any] = {"id": str(row["id"]), "question": row["question"], "answers": answers}
        if metric == "squad_v2":
            qa["is_impossible"] = not answers
        paragraphs[title, context]["qas"].append(qa)
    return {"version": _HUB_VERSION.get(metric or "", source), "data": list(articles.values())}
