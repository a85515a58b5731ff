"""The report's "Abstract": a few sentences (what was run, the answer to the paper's question, the controls'
verdict, the agreement with the paper) and one verdict table; and the per-grid sentences of the zone x layer
section.

The answer comes from the ``headline`` table (:mod:`mrcbench.stats.headline`), the controls' verdict from
``specificity`` (:mod:`mrcbench.stats.controls`, worded by :mod:`mrcbench.report.controls`), the agreement
from ``paper_comparison``; this module only turns them into text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrcbench.report.blocks import fmt_ci, grid_counts, p_text, plural, zone_label
from mrcbench.report.controls import VERDICT_WORDS, verdict_counts, verdict_table
from mrcbench.report.inputs import ReportData
from mrcbench.stats.common import primary_variant
from mrcbench.stats.controls import PRIMARY_CONTINUOUS
from mrcbench.tables import RUN_KEYS
from mrcbench.zones import PAPER_ZONES


def _paper_sentence(em: pd.DataFrame) -> str:
    """Spearman's rho range (only finite values: rho is undefined on a constant grid) and the top-two
    agreement, counted only over grids whose own top two zones are determined."""
    rho = em["spearman_rho"].astype(float)
    rho = rho[np.isfinite(rho)]
    if rho.empty:
        rho_text = "Spearman ρ over matched cells is undefined (the run's deltas are constant)"
    elif rho.min() == rho.max():
        rho_text = f"Spearman ρ over matched cells is {rho.min():.2f} ({len(rho)} of {len(em)} grids)"
    else:
        rho_text = f"Spearman ρ over matched cells is {rho.min():.2f} to {rho.max():.2f} ({len(rho)} of {len(em)} grids)"
    named = em[em["top2_run"].fillna("").astype(str).str.len() > 0]
    if named.empty:
        top_text = (
            "no grid names two most damaging zones (their drops tie or are zero), so no agreement is claimed"
        )
    else:
        top_text = (
            f"the two most damaging zones agree in {int(named['top2_agree'].astype(bool).sum())} of "
            f"{len(named)} grids that name two"
        )
        if len(named) < len(em):
            rest = len(em) - len(named)
            top_text += f" ({rest} {'grid names' if rest == 1 else 'grids name'} none: their drops tie or are zero)"
    return f"Against the paper's digitised BERT/SQuAD ΔEM grid, {rho_text}, and {top_text}."


def _effect_phrase(row: pd.Series | dict, metric: str) -> str:
    """ "P2P in layer 1 (ΔF1 = −12.3 [−15.0, −9.8], significant after Holm correction, p < 0.001)"."""
    delta = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
    p = p_text(row["p_holm"])
    covers_zero = not bool(row["ci_excludes_zero"])
    if covers_zero:
        verdict = f"no significant difference, Holm {p}"
    elif bool(row["significant_holm"]):
        verdict = f"significant after Holm correction, {p}"
    else:
        verdict = f"not significant after Holm correction, {p}"
    return f"{zone_label(row['zone'])} in layer {int(row['layer']) + 1} (Δ{metric.upper()} = {delta}, {verdict})"


VERDICT_SENTENCES = {
    "agrees": "This agrees with the paper's answer, P2Q + P2P.",
    "same zones, one significant": (
        "These are the paper's two zones, P2Q and P2P, but only one drop is significant, so this grid "
        "confirms the paper's answer only in part."
    ),
    "differs": "This differs from the paper's answer, P2Q + P2P.",
    "no change": (
        "No zone's masking changes the score in this grid, so it names no most damaging zone and can "
        "neither confirm nor refute the paper's answer, P2Q + P2P."
    ),
    "tied": (
        "These drops tie with the next zone's or are no drops, so this grid names no two most damaging "
        "zones and can neither confirm nor refute the paper's answer, P2Q + P2P."
    ),
    "no significant drop": (
        "Neither drop is significant, so this grid can neither confirm nor refute the paper's answer, P2Q + P2P."
    ),
}


def headline_sentences(
    headline: pd.DataFrame, variant: str = "paper", metric: str = "f1", min_clusters: int | None = None,
) -> list[str]:
    """One sentence per leg (model, train set, eval set) from :func:`mrcbench.stats.headline.headline_zones`:
    the two zones whose masking hurts most, with CIs and corrected significance, and whether they are
    the paper's P2Q + P2P."""
    if headline is None or headline.empty:
        return []
    rows = headline[(headline["metric"] == metric)]
    if variant in set(rows["variant"]):
        rows = rows[rows["variant"] == variant]
    else:
        rows = rows[rows["variant"] == min(rows["variant"])] if not rows.empty else rows
    sentences = []
    for (model, train_set, eval_set), leg in rows.groupby(list(RUN_KEYS), sort=True):
        leg = leg.sort_values("rank")
        effects = [_effect_phrase(row, metric) for _, row in leg.iterrows()]
        zones = " and ".join(effects)
        verdict_key = leg["verdict"].iloc[0]
        verdict = VERDICT_SENTENCES.get(verdict_key, "")
        counts = grid_counts(leg.head(1), min_clusters)
        controls = ""
        if verdict_key == "no change":
            sentences.append(f"**{model} on {eval_set}** (fine-tuned on {train_set}; {counts}): {verdict}{controls}")
            continue
        if verdict_key == "tied":
            sentences.append(
                f"**{model} on {eval_set}** (fine-tuned on {train_set}; {counts}): the largest drops are "
                f"{zones}. {verdict}{controls}"
            )
            continue
        sentences.append(
            f"**{model} on {eval_set}** (fine-tuned on {train_set}; {counts}): the zones whose masking hurts "
            f"most are {zones}. {verdict}{controls}"
        )
    return sentences


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_words(n: int, noun: str, plural_form: str | None = None) -> str:
    """:func:`mrcbench.report.blocks.plural` with the number in words up to ten: "one model", "two models",
    "12 models" (no "model(s)")."""
    text = plural(n, noun, plural_form)
    return _NUMBER_WORDS[n] + text[len(str(n)):] if 0 <= n < len(_NUMBER_WORDS) else text


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _answer_sentence(headline: pd.DataFrame, variant: str) -> str:
    """How many grids name the paper's two zones as the most damaging (``headline`` verdicts, ΔF1)."""
    rows = headline[(headline["metric"] == "f1") & (headline["variant"] == variant)]
    verdicts = rows.drop_duplicates(list(RUN_KEYS))["verdict"].value_counts()
    n = int(verdicts.sum())
    agrees = int(verdicts.get("agrees", 0))
    one = int(verdicts.get("same zones, one significant", 0))
    parts = []
    if agrees:
        parts.append(f"in {agrees} of {n} grids the two zones whose masking lowers F1 most are the paper's, "
                     "P2Q and P2P, both significant after Holm correction")
    if one:
        parts.append(f"in {one} they are P2Q and P2P with only one drop significant")
    other = n - agrees - one
    if other:
        parts.append(f"in {other} the grid does not single out P2Q and P2P (see the zone × layer section)")
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _controls_sentence(specificity: pd.DataFrame, variant: str, measure: str = "f1") -> str:
    """Per paper zone, how many grids give each verdict at the zone's most damaging layer (``measure``)."""
    phrases = []
    for zone in PAPER_ZONES:
        counts = verdict_counts(specificity, zone, variant, measure)
        if not counts:
            continue
        n = sum(counts.values())
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        said = [f"{VERDICT_WORDS.get(code, code)} in {_grids(count, n)}" for code, count in ordered]
        phrases.append(f"{zone_label(zone)}: " + (", ".join(said[:-1]) + " and " if len(said) > 1 else "")
                       + said[-1])
    if not phrases:
        return ""
    if measure == "f1":
        return ("Against controls that remove as much attention, at each zone's most damaging layer by ΔF1, "
                + "; ".join(phrases) + ".")
    return "By the log-probability of the unmasked answer, " + "; ".join(phrases) + "."


def _grids(count: int, n: int) -> str:
    if n == 1:
        return "the one grid"
    return f"all {_NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else n} grids" if count == n else f"{count} of {n}"


def abstract_markdown(data: ReportData) -> str:
    """The abstract: at most a few sentences written from the run's own tables, then the verdict table
    (:func:`mrcbench.report.controls.verdict_table`)."""
    deltas = data.tables.get("deltas", pd.DataFrame())
    baselines = data.tables.get("baselines", pd.DataFrame())
    headline = data.tables.get("headline", pd.DataFrame())
    specificity = data.tables.get("specificity", pd.DataFrame())
    source = baselines if not baselines.empty else deltas
    if source is None or source.empty:
        return "No results were found: run the workflow first."
    models = sorted(set(source["model"]))
    evals = sorted(set(source["eval_set"]))
    n_seeds = int(source["n_seeds"].max())
    variant = primary_variant(headline["variant"]) if not headline.empty else "paper"
    grids = headline[list(RUN_KEYS)].drop_duplicates() if not headline.empty else headline
    parts = [
        f"We fine-tuned {count_words(len(models), 'model')} ({', '.join(models)}), "
        f"{count_words(n_seeds, 'seed')} each, evaluated {'it' if len(models) == 1 else 'them'} on "
        f"{count_words(len(evals), 'evaluation set')} and masked each attention zone of Cui et al. (2022) in one "
        f"layer at a time"
        + (f" on {count_words(len(grids), 'zone × layer grid')}." if len(grids) else ".")
    ]
    if not headline.empty:
        parts.append(_answer_sentence(headline, variant))
    if specificity is not None and not specificity.empty:
        parts.append(_controls_sentence(specificity, variant))
        parts.append(_controls_sentence(specificity, variant, PRIMARY_CONTINUOUS))
    paper = data.tables.get("paper_comparison", pd.DataFrame())
    if not paper.empty:
        em = paper[paper["metric"] == "em"]
        if not em.empty:
            parts.append(_paper_sentence(em))
    return " ".join(part for part in parts if part)


def abstract_table(data: ReportData) -> tuple[pd.DataFrame, str]:
    """The abstract's verdict table (:func:`mrcbench.report.controls.verdict_table`) and its caption text."""
    headline = data.tables.get("headline", pd.DataFrame())
    variant = primary_variant(headline["variant"]) if not headline.empty else "paper"
    table = verdict_table(data.tables.get("specificity", pd.DataFrame()), headline, variant)
    caption = ("Read the verdict column first. The verdict per grid for the paper's zones "
               f"({variant} variant; layers numbered from 1): each zone's most damaging layer by ΔF1 with its "
               "bootstrap CI, the control that decides (a size-matched null where enough questions' draws matched "
               "the zone's mass, else uniform) and what it showed.")
    return table, caption
