"""The report's "Abstract": one sentence per leg from the ``headline`` table.

The table is computed by :mod:`mrcbench.stats.headline`; this module only turns it into text. Each leg's
sentence ends with the size-matched controls of P2Q and P2P (``specificity`` table,
:func:`mrcbench.report.controls.specificity_clause`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrcbench.report.blocks import fmt_ci, fmt_p, grid_counts, zone_label
from mrcbench.report.controls import specificity_clause
from mrcbench.report.inputs import ReportData
from mrcbench.stats.common import TIE_TOLERANCE, layer_grid, primary_variant


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
            top_text += f" ({len(em) - len(named)} grid(s) name none: their drops tie or are zero)"
    return f"Against the paper's digitised BERT/SQuAD ΔEM grid, {rho_text}, and {top_text}."


def _effect_phrase(row: pd.Series | dict, metric: str) -> str:
    """ "P2P in layer 1 (ΔF1 = −12.3 [−15.0, −9.8], significant after Holm correction, p < 0.001)"."""
    delta = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
    p = fmt_p(row["p_holm"])
    p_text = f"p {p}" if p.startswith("<") else f"p = {p}"
    covers_zero = not bool(row["ci_excludes_zero"])
    if covers_zero:
        verdict = f"no significant difference, Holm {p_text}"
    elif bool(row["significant_holm"]):
        verdict = f"significant after Holm correction, {p_text}"
    else:
        verdict = f"not significant after Holm correction, {p_text}"
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
    specificity: pd.DataFrame | None = None,
) -> list[str]:
    """One sentence per leg (model, train set, eval set) from :func:`mrcbench.stats.headline.headline_zones`:
    the two zones whose masking hurts most, with CIs and corrected significance, and whether they are
    the paper's P2Q + P2P. With ``specificity`` (the stats table, possibly empty), each sentence adds
    whether P2Q and P2P exceed their size-matched nulls (or what the uniform operator shows)."""
    if headline is None or headline.empty:
        return []
    rows = headline[(headline["metric"] == metric)]
    if variant in set(rows["variant"]):
        rows = rows[rows["variant"] == variant]
    else:
        rows = rows[rows["variant"] == min(rows["variant"])] if not rows.empty else rows
    sentences = []
    for (model, train_set, eval_set), leg in rows.groupby(["model", "train_set", "eval_set"], sort=True):
        leg = leg.sort_values("rank")
        effects = [_effect_phrase(row, metric) for _, row in leg.iterrows()]
        zones = " and ".join(effects)
        verdict_key = leg["verdict"].iloc[0]
        verdict = VERDICT_SENTENCES.get(verdict_key, "")
        counts = grid_counts(leg.head(1), min_clusters)
        controls = (
            " " + specificity_clause(specificity, (model, train_set, eval_set), leg["variant"].iloc[0])
            if specificity is not None else ""
        )
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


def abstract_markdown(data: ReportData) -> str:
    """The abstract, written from the run's own numbers."""
    deltas, baselines = data.deltas, data.baselines
    parts: list[str] = []
    layer = layer_grid(deltas)
    models = (
        sorted(set(baselines["model"]) | set(layer.get("model", pd.Series(dtype=str))))
        if not baselines.empty
        else sorted(set(layer["model"]))
    )
    evals = sorted(set(baselines["eval_set"])) if not baselines.empty else sorted(set(layer["eval_set"]))
    n_seeds = int(baselines["n_seeds"].max()) if not baselines.empty else int(layer["n_seeds"].max())
    parts.append(
        f"We fine-tuned {len(models)} model(s) ({', '.join(models)}) with {n_seeds} seed(s) each, "
        f"evaluated them on {len(evals)} set(s) ({', '.join(evals)}), and blanked one attention zone "
        "(Q2Q, Q2P, P2Q, P2P, or all four) in one layer at a time, following Cui et al. (2022)."
    )
    f1 = baselines[baselines["metric"] == "f1"] if not baselines.empty else baselines
    if not f1.empty:
        low, high = f1.loc[f1["value"].idxmin()], f1.loc[f1["value"].idxmax()]

        def where(row: pd.Series) -> str:  # which run, over which questions (a SQuAD 2.0 F1 counts unanswerables)
            return f"{row['model']} on {row['eval_set']}, {int(row['n_questions'])} questions"

        parts.append(
            f"Unmasked F1 ranged from {low['value']:.1f} ({where(low)}) to {high['value']:.1f} ({where(high)})."
        )
    primary = layer[(layer["metric"] == "f1")] if not layer.empty else layer
    if not primary.empty:
        primary = primary[primary["variant"] == primary_variant(primary["variant"])]
    finite = primary[np.isfinite(primary["delta"].astype(float))] if not primary.empty else primary
    lowest = float(finite["delta"].min()) if not finite.empty else float("nan")
    tied_lowest = (finite["delta"] - lowest).abs() <= TIE_TOLERANCE if not finite.empty else finite["delta"]
    if not finite.empty and lowest >= -TIE_TOLERANCE:
        parts.append("No zone × layer cell's masking lowers F1 (no ΔF1 is negative), so no cell is the most damaging.")
    elif not finite.empty and int(tied_lowest.sum()) > 1:
        parts.append(
            f"The largest drop, ΔF1 = {lowest:.1f}, is shared by {int(tied_lowest.sum())} zone × layer cells, "
            "so no single cell is the most damaging."
        )
    elif not finite.empty:
        worst = finite.loc[finite["delta"].idxmin()]
        parts.append(
            f"The most damaging cell was {zone_label(worst['zone'])} in layer {int(worst['layer']) + 1} of "
            f"{worst['model']} on {worst['eval_set']} "
            f"(ΔF1 = {fmt_ci(worst['delta'], worst['ci_low'], worst['ci_high'])}, "
            f"Holm-corrected p = {fmt_p(worst['p_holm'])})."
        )
    if not primary.empty:
        significant = primary[primary["significant_holm"] & (primary["delta"] < 0)]
        passage = significant[significant["zone"].isin(["p2q", "p2p"])]
        parts.append(
            f"Of the {len(primary)} zone × layer cells (ΔF1, {primary['variant'].iloc[0]} variant, all "
            f"grids), {len(significant)} show a drop that survives Holm correction; {len(passage)} of them "
            "are P2Q or P2P, the zones the paper singles out."
        )
    legs = headline_sentences(
        data.tables.get("headline", pd.DataFrame()), min_clusters=data.settings.get("min_clusters"),
        specificity=data.tables.get("specificity", pd.DataFrame()),
    )
    if legs:
        parts.append(
            "Per grid, a zone's damage is its most damaging layer (ΔF1 with its bootstrap CI; corrected "
            "over the grid's cells):\n\n" + "\n".join(f"- {sentence}" for sentence in legs) + "\n\n"
        )
    corr = data.correlations
    if not corr.empty:
        c1 = corr[(corr["analysis"] == "C1") & (corr["x_quantity"] == "zone_mass") & (corr["metric"] == "f1")]
        if not c1.empty and c1["pearson_r"].notna().any():
            significant = int(c1["significant_holm"].fillna(False).astype(bool).sum()) if (
                "significant_holm" in c1
            ) else 0
            parts.append(
                f"Across layers, a zone's attention mass and the F1 drop from masking it correlate with "
                f"median Pearson r = {c1['pearson_r'].median():.2f} over {len(c1)} zone × grid pairs (C1); "
                f"{significant} of them are significant after Holm correction."
            )
    rank = data.crosslingual_rank
    if not rank.empty:
        rows = rank[(rank["metric"] == "f1") & rank["kendall_tau"].notna()]  # tau is undefined on a flat profile
        if not rows.empty:
            parts.append(
                f"On parallel evaluation sets the zone × layer profiles agree across languages with Kendall "
                f"τ between {rows['kendall_tau'].min():.2f} and {rows['kendall_tau'].max():.2f}."
            )
    paper = data.paper_comparison
    if not paper.empty:
        em = paper[paper["metric"] == "em"]
        if not em.empty:
            parts.append(_paper_sentence(em))
    return " ".join(parts)
