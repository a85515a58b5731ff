"""Statistics on data with known answers: planted effects, clusters, seeds, correlations, languages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mrcbench import config as cfg
from mrcbench import stats, tables
from mrcbench.errors import MrcbenchError

from support.synthetic_results import write_synthetic_results

ZONES = ("all", "q2q", "q2p", "p2q", "p2p")
FAST = cfg.stats_config({"stats": {"seed": 3, "bootstrap": 1000, "permutations": 4999, "alpha": 0.05}})


def planted_grid(
    *,
    n_articles: int = 20,
    per_article: int = 10,
    n_layers: int = 6,
    effects: dict[tuple[str, int], float] | None = None,
    noise_sd: float = 8.0,
    article_sd: float = 0.0,
    seeds: dict[int, float] | None = None,
    eval_set: str = "dev",
    qid_prefix: str = "q",
    with_articles: bool = True,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """A grid.parquet-shaped frame: masked F1 = baseline + planted effect + noise (+ article shift).

    ``seeds`` maps seed -> an extra delta of that seed in every planted cell (seed-to-seed spread).
    EM mirrors F1 (100 when F1 >= 50), so EM and F1 deltas have the same sign.
    """
    rng = np.random.default_rng(rng_seed)
    effects = effects or {}
    seeds = seeds or {0: 0.0}
    n = n_articles * per_article
    qids = [f"{qid_prefix}{i:04d}" for i in range(n)]
    articles = [f"article{i // per_article}" if with_articles else None for i in range(n)]
    article_shift = np.repeat(rng.normal(0, article_sd, n_articles), per_article)
    frames = []
    for seed, seed_shift in seeds.items():
        baseline = rng.uniform(40, 100, n)
        keys = {"model": "m", "train_set": "train", "eval_set": eval_set, "seed": seed, "variant": "paper"}
        frames.append(
            pd.DataFrame(
                {
                    **keys,
                    "mode": "baseline",
                    "layer": -1,
                    "head": -1,
                    "zone": "none",
                    "qid": qids,
                    "article": articles,
                    "em": 100.0 * (baseline >= 50),
                    "f1": baseline,
                    "removed_mass": 0.0,
                }
            )
        )
        for layer in range(n_layers):
            for zone in ZONES:
                effect = effects.get((zone, layer), 0.0)
                shift = seed_shift if (zone, layer) in effects else 0.0
                masked = baseline + effect + shift + article_shift + rng.normal(0, noise_sd, n)
                frames.append(
                    pd.DataFrame(
                        {
                            **keys,
                            "mode": "layer",
                            "layer": layer,
                            "head": -1,
                            "zone": zone,
                            "qid": qids,
                            "article": articles,
                            "em": 100.0 * (masked >= 50),
                            "f1": masked,
                            "removed_mass": rng.uniform(0, 1, n),
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def deltas_for(grid: pd.DataFrame, settings: stats.common.StatsSettings = FAST) -> pd.DataFrame:
    deltas, _ = stats.deltas.compute_deltas(stats.deltas.build_question_matrices(grid), settings)
    return deltas


def f1_cell(deltas: pd.DataFrame, zone: str, layer: int) -> pd.Series:
    rows = deltas[(deltas["metric"] == "f1") & (deltas["zone"] == zone) & (deltas["layer"] == layer)]
    assert len(rows) == 1
    return rows.iloc[0]


# --------------------------------------------------------------------------------------------------
# Deltas, CIs, tests, corrections
# --------------------------------------------------------------------------------------------------


def test_planted_drop_is_significant_after_holm_and_bh_and_null_cells_are_not():
    grid = planted_grid(effects={("p2p", 0): -10.0})
    deltas = deltas_for(grid)
    f1 = deltas[deltas["metric"] == "f1"]
    assert len(f1) == 30  # 5 zones x 6 layers
    planted = f1_cell(deltas, "p2p", 0)
    assert planted["significant_holm"] and planted["significant_bh"]
    assert planted["ci_low"] < -10.0 < planted["ci_high"]
    assert planted["delta"] == pytest.approx(-10.0, abs=1.5)
    null = f1[~((f1["zone"] == "p2p") & (f1["layer"] == 0))]
    assert null["significant_holm"].sum() <= 1
    assert null["significant_bh"].sum() <= 2
    # The uncorrected test alone is calibrated-ish: few nominal rejections among 29 null cells.
    assert (null["p_value"] < 0.05).sum() <= 5
    # The corrections are monotone: Holm is never below BH, and neither is below the raw p-value.
    assert (f1["p_holm"] >= f1["p_bh"] - 1e-12).all() and (f1["p_bh"] >= f1["p_value"] - 1e-12).all()


def test_delta_is_masked_minus_baseline_and_rows_carry_the_design():
    grid = planted_grid(effects={("p2q", 3): -5.0}, n_articles=12, per_article=5)
    deltas = deltas_for(grid)
    cell = f1_cell(deltas, "p2q", 3)
    masked = grid[(grid["zone"] == "p2q") & (grid["layer"] == 3)]["f1"].mean()
    baseline = grid[grid["mode"] == "baseline"]["f1"].mean()
    assert cell["delta"] == pytest.approx(masked - baseline)
    assert cell["baseline"] == pytest.approx(baseline) and cell["masked"] == pytest.approx(masked)
    assert cell["resampling"] == "article" and cell["n_clusters"] == 12 and cell["n_questions"] == 60
    assert cell["test"].startswith("sign-flip, exact")  # 2**12 sign vectors <= 4999 + 1


def test_article_clusters_are_resampled_and_widen_the_interval_under_clustering():
    effects = {("p2p", 0): -4.0}
    clustered = planted_grid(effects=effects, article_sd=6.0, noise_sd=2.0)
    no_articles = clustered.assign(article=None)
    with_articles = f1_cell(deltas_for(clustered), "p2p", 0)
    without = f1_cell(deltas_for(no_articles), "p2p", 0)
    assert with_articles["resampling"] == "article" and with_articles["n_clusters"] == 20
    assert without["resampling"] == "question" and without["n_clusters"] == 200
    assert with_articles["delta"] == pytest.approx(without["delta"])
    width_articles = with_articles["ci_high"] - with_articles["ci_low"]
    width_questions = without["ci_high"] - without["ci_low"]
    assert width_articles > 2.0 * width_questions


@pytest.mark.parametrize(
    "n_articles,per_article,unit", [(4, 25, "question"), (9, 12, "question"), (10, 10, "article"), (25, 4, "article")]
)
def test_questions_are_resampled_below_ten_articles_and_articles_from_ten(n_articles, per_article, unit):
    grid = planted_grid(effects={("p2p", 0): -8.0}, n_articles=n_articles, per_article=per_article)
    cell = f1_cell(deltas_for(grid), "p2p", 0)
    assert cell["resampling"] == unit
    assert cell["n_clusters"] == n_articles and cell["n_questions"] == n_articles * per_article
    if unit == "question":
        # 100 questions: random sign vectors over questions, and a clear effect reaches a small p-value
        # (an exact test over 4 article sums could not go below 2/16).
        assert "random sign vectors" in cell["test"]
        assert cell["p_value"] < 0.01 and cell["significant_holm"]


def test_min_clusters_setting_decides_the_unit():
    grid = planted_grid(effects={("p2p", 0): -8.0}, n_articles=4, per_article=25)
    loose = cfg.stats_config({"stats": {"seed": 3, "bootstrap": 200, "permutations": 999, "min_clusters": 3}})
    cell = f1_cell(deltas_for(grid, loose), "p2p", 0)
    assert cell["resampling"] == "article" and cell["test"].startswith("sign-flip, exact (16")
    assert cell["p_value"] >= 2 / 16 - 1e-12
    assert cfg.stats_config({"stats": {"min_clusters": 3}}).min_clusters == 3
    assert cfg.stats_config({}).min_clusters == 10
    # Subsets (question-type buckets) follow the same rule.
    design = stats.resampling.ResamplingDesign.from_articles(np.repeat(np.arange(12), 5), 60, min_clusters=10)
    assert design.unit == "article" and design.n_articles == 12
    small = design.subset(np.arange(20))  # 4 articles
    assert small.unit == "question" and small.n_articles == 4 and small.n_clusters == 20


def test_unanswerable_questions_are_left_out_of_the_deltas():
    grid = planted_grid(effects={("p2p", 0): -8.0}, n_articles=10, per_article=10)
    qids = sorted(grid["qid"].unique())
    scores = pd.DataFrame(
        {"model": "m", "train_set": "train", "eval_set": "dev", "qid": qids,
         "has_answer": [i % 4 != 0 for i in range(len(qids))]}
    )
    kept = stats.results.answerable_grid(grid, scores)
    assert set(kept["qid"]) == {q for q, a in zip(qids, scores["has_answer"], strict=True) if a}
    assert f1_cell(deltas_for(kept), "p2p", 0)["n_questions"] == 75
    assert stats.results.answerable_grid(grid, scores.drop(columns="has_answer")) is grid


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate():
    settings = cfg.stats_config({"stats": {"seed": 11, "bootstrap": 400, "permutations": 99}})
    covered, widths = 0, []
    trials = 60
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        articles = np.repeat(np.arange(15), 8)
        values = (rng.normal(-3.0, 5.0, 120) + np.repeat(rng.normal(0, 2.0, 15), 8))[:, None]
        design = stats.resampling.ResamplingDesign.from_articles(articles, 120, min_clusters=10)
        summary = stats.resampling.summarize_paired(values, design, settings, rng, with_tests=False)
        covered += summary.ci_low[0] <= -3.0 <= summary.ci_high[0]
        widths.append(summary.ci_high[0] - summary.ci_low[0])
    # Coverage near 95%, and an interval as wide as the clustered design implies: the standard error
    # of the mean is sqrt(5**2 / 120 + 2**2 / 15) = 0.69, so a 95% interval is about 2.7 wide. An
    # interval that is far too wide (or infinite) would cover every time; the width bound catches it.
    assert 0.8 <= covered / trials < 1.0
    expected_width = 2 * 1.96 * np.sqrt(5.0**2 / 120 + 2.0**2 / 15)
    assert 0.8 * expected_width <= np.mean(widths) <= 1.2 * expected_width


def test_sign_flip_exact_and_monte_carlo_p_values():
    design = stats.resampling.ResamplingDesign.from_articles(["a", "a", "b", "c"], 4, min_clusters=2)
    values = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    p, test = stats.resampling.sign_flip_pvalues(values, design, n_permutations=99, rng=np.random.default_rng(0))
    # Three clusters, all positive: only the identity and the full flip reach |sum| = 7 -> 2/8.
    assert test.startswith("sign-flip, exact") and p[0] == pytest.approx(0.25)
    assert p[1] == pytest.approx(1.0)  # all-zero deltas
    many = stats.resampling.ResamplingDesign.from_articles(np.repeat(np.arange(40), 3), 120, min_clusters=10)
    shifted = np.random.default_rng(1).normal(2.0, 1.0, (120, 1))
    p, test = stats.resampling.sign_flip_pvalues(shifted, many, n_permutations=999, rng=np.random.default_rng(2))
    assert "999 random" in test and p[0] == pytest.approx(1 / 1000)


def test_holm_adjustment_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(9)
    for size in (1, 2, 7, 60):
        p = rng.uniform(0, 0.2, size) ** 2
        p[: size // 3] = p[0]  # ties
        assert stats.multiple_testing.holm_adjust(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_wilcoxon_is_one_for_all_zero_columns_and_matches_scipy_otherwise():
    rng = np.random.default_rng(4)
    values = np.column_stack([np.zeros(30), rng.normal(1.0, 1.0, 30)])
    p = stats.resampling.wilcoxon_pvalues(values)
    assert p[0] == 1.0
    assert p[1] == pytest.approx(sps.wilcoxon(values[:, 1], zero_method="pratt").pvalue)


def _scipy_wilcoxon_pvalues(values: np.ndarray) -> np.ndarray:
    """What wilcoxon_pvalues stood for before its fast path: scipy's own call on the informative columns."""
    import warnings

    p = np.ones(values.shape[1])
    informative = np.count_nonzero(values, axis=0) > 0
    if informative.any():
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            pvalue = sps.wilcoxon(values[:, informative], zero_method="pratt", axis=0).pvalue
        p[informative] = np.where(np.isfinite(pvalue), pvalue, 1.0)
    return p


def test_wilcoxon_equals_scipy_to_the_last_bit_on_every_path():
    """Small samples with zeros and ties (scipy's exact permutation test, computed here vectorised),
    small samples without (exact distribution), mid-size with ties and large (normal approximation)."""
    rng = np.random.default_rng(11)
    permutation_cases = 0
    # scipy's own permutation path costs 2**n Python calls per column: keep n small, but reach 13.
    shapes = [(int(rng.choice([2, 4, 6, 8, 14, 30, 60])), int(rng.integers(1, 5))) for _ in range(120)]
    for trial, (n, columns) in enumerate([(13, 1), (12, 2), *shapes]):
        if trial % 3 == 0:
            values = rng.normal(size=(n, columns))
        else:  # F1-like deltas: few distinct values, many ties and zeros
            values = rng.integers(-3, 4, size=(n, columns)) * rng.choice([1.0, 0.5, 1 / 3])
        if trial % 7 == 0:
            values[:, 0] = 0.0
        permutation_cases += stats.resampling.wilcoxon_takes_permutation_path(values[:, np.any(values != 0, axis=0)])
        assert np.array_equal(stats.resampling.wilcoxon_pvalues(values), _scipy_wilcoxon_pvalues(values)), (n, values)
    assert permutation_cases >= 30


def test_seed_spread_of_deltas_and_baselines_on_three_seeds():
    grid = planted_grid(effects={("p2p", 1): -10.0}, seeds={1: 2.0, 2: 0.0, 3: -2.0}, noise_sd=0.0)
    matrices = stats.deltas.build_question_matrices(grid)
    deltas, seed_rows = stats.deltas.compute_deltas(matrices, FAST)
    cell = f1_cell(deltas, "p2p", 1)
    assert cell["n_seeds"] == 3
    assert cell["delta"] == pytest.approx(-10.0)
    assert cell["seed_delta_min"] == pytest.approx(-12.0) and cell["seed_delta_max"] == pytest.approx(-8.0)
    assert cell["seed_delta_sd"] == pytest.approx(2.0)
    per_seed = seed_rows[
        (seed_rows["zone"] == "p2p") & (seed_rows["layer"] == 1) & (seed_rows["metric"] == "f1")
    ].set_index("seed")["value"]
    assert per_seed.to_dict() == pytest.approx({1: -8.0, 2: -10.0, 3: -12.0})
    # Baselines: per-seed means, their spread, and the seed mean.
    base = grid[grid["mode"] == "baseline"]
    scores = base.drop(columns=["variant", "mode", "layer", "head", "zone", "removed_mass"]).assign(
        question="What is it?"
    )
    no_official = pd.DataFrame(columns=stats.results.OFFICIAL_COLUMNS)
    tables = stats.results.ResultTables(grid=grid, scores=scores, zone_stats=None, official=no_official)
    baselines, baseline_seeds = stats.baselines.compute_baselines(tables, None, FAST)
    f1 = baselines[baselines["metric"] == "f1"].iloc[0]
    seed_means = base.groupby("seed")["f1"].mean()
    assert f1["n_seeds"] == 3
    assert f1["value"] == pytest.approx(seed_means.mean())
    assert f1["seed_sd"] == pytest.approx(seed_means.std(ddof=1))
    assert f1["seed_min"] == pytest.approx(seed_means.min()) and f1["grid_baseline"] == pytest.approx(
        seed_means.mean()
    )
    assert set(baseline_seeds["seed"]) == {1, 2, 3}
    # A grid on a sub-sample of the questions is compared with the prediction scores of those questions.
    kept = sorted(scores["qid"].unique())[: len(scores["qid"].unique()) // 2]
    sub = stats.results.ResultTables(grid=grid[grid["qid"].isin(kept)], scores=scores, zone_stats=None, official=no_official)
    sub_f1 = stats.baselines.compute_baselines(sub, None, FAST)[0].query("metric == 'f1'").iloc[0]
    on_kept = scores[scores["qid"].isin(kept)].groupby("seed")["f1"].mean().mean()
    assert sub_f1["scores_on_grid_questions"] == pytest.approx(on_kept)
    assert sub_f1["value"] == pytest.approx(seed_means.mean())


# --------------------------------------------------------------------------------------------------
# Correlations
# --------------------------------------------------------------------------------------------------


def test_correlation_summary_recovers_a_planted_r():
    rng = np.random.default_rng(5)
    x = rng.normal(size=3000)
    y = 0.6 * x + np.sqrt(1 - 0.6**2) * rng.normal(size=3000)
    result = stats.correlations.correlation_summary(x, y)
    assert result["n"] == 3000
    assert result["pearson_r"] == pytest.approx(0.6, abs=0.04)
    assert result["pearson_ci_low"] < 0.6 < result["pearson_ci_high"]
    assert result["spearman_rho"] == pytest.approx(0.58, abs=0.05)  # 6/pi * asin(r/2) for a normal pair
    assert result["pearson_p"] < 1e-10
    reference = sps.pearsonr(x, y).confidence_interval()
    assert (result["pearson_ci_low"], result["pearson_ci_high"]) == pytest.approx(
        (reference.low, reference.high)
    )
    # Degenerate inputs give NaN, not an exception.
    assert np.isnan(stats.correlations.correlation_summary(np.ones(10), np.arange(10.0))["pearson_r"])


def test_cluster_robust_se_exceeds_the_naive_se_under_article_clustering():
    rng = np.random.default_rng(6)
    n_articles, per_article = 40, 15
    groups = np.repeat(np.arange(n_articles), per_article)
    # Both the regressor and the error share an article component: the textbook case for clustering.
    x = np.repeat(rng.normal(size=n_articles), per_article) + 0.2 * rng.normal(size=groups.size)
    y = 0.5 * x + np.repeat(rng.normal(0, 2.0, n_articles), per_article) + rng.normal(0, 0.5, groups.size)
    fit = stats.correlations.ols_cluster(y, x, groups, min_clusters=10)
    assert fit["ols_cov_type"] == "cluster(article)" and fit["n_clusters"] == n_articles
    assert fit["ols_se_cluster"] > 2.0 * fit["ols_se_naive"]
    fallback = stats.correlations.ols_cluster(y, x, None, min_clusters=10)
    assert fallback["ols_cov_type"] == "HC1"


def test_c1_and_c3_find_planted_relations_between_mass_and_damage():
    rng = np.random.default_rng(7)
    n_layers, n = 8, 240
    qids = [f"q{i}" for i in range(n)]
    articles = [f"a{i // 6}" for i in range(n)]
    layer_mass = np.linspace(0.1, 0.8, n_layers)  # p2p mass grows with depth
    question_mass = np.clip(layer_mass[None, :] + rng.normal(0, 0.1, (n, n_layers)), 0, 1)
    rows, zone_rows = [], []
    baseline = rng.uniform(50, 100, n)
    keys = {"model": "m", "train_set": "t", "eval_set": "dev", "seed": 0, "variant": "paper"}
    rows.append(
        pd.DataFrame(
            {**keys, "mode": "baseline", "layer": -1, "head": -1, "zone": "none", "qid": qids}
            | {"article": articles, "em": 100.0, "f1": baseline, "removed_mass": 0.0}
        )
    )
    for layer in range(n_layers):
        # Damage proportional to the question's own mass (C3) and so to the layer's mass (C1).
        drop = 30.0 * question_mass[:, layer] + rng.normal(0, 2.0, n)
        rows.append(
            pd.DataFrame(
                {**keys, "mode": "layer", "layer": layer, "head": -1, "zone": "p2p", "qid": qids}
                | {"article": articles, "em": 100.0, "f1": baseline - drop}
                | {"removed_mass": question_mass[:, layer]}
            )
        )
        zone_rows.append(
            pd.DataFrame(
                {k: v for k, v in keys.items() if k != "variant"}
                | {"qid": qids, "article": articles, "layer": layer, "head": 0}
                | {"row_zone": "passage", "col_zone": "passage", "mass": question_mass[:, layer]}
            )
        )
    grid, zone_stats = pd.concat(rows), pd.concat(zone_rows)
    matrices = stats.deltas.build_question_matrices(grid)
    deltas, _ = stats.deltas.compute_deltas(matrices, FAST)
    correlations = stats.correlations.compute_correlations(
        matrices, deltas, stats.zone_mass.compute_zone_mass(zone_stats), stats.zone_mass.question_layer_mass(zone_stats), FAST
    )
    c1 = correlations[
        (correlations["analysis"] == "C1")
        & (correlations["metric"] == "f1")
        & (correlations["x_quantity"] == "zone_mass")
    ]
    assert len(c1) == 1 and c1.iloc[0]["n"] == n_layers and c1.iloc[0]["pearson_r"] > 0.95
    c3 = correlations[
        (correlations["analysis"] == "C3")
        & (correlations["metric"] == "f1")
        & (correlations["x_quantity"] == "zone_mass")
    ]
    assert len(c3) == n_layers
    assert (c3["pearson_r"] > 0.6).all() and (c3["ols_coef"] - 30.0).abs().max() < 5.0
    assert (c3["n"] == n).all() and (c3["n_clusters"] == n // 6).all()
    c2 = correlations[correlations["analysis"] == "C2"]
    assert len(c2) == 2 * n_layers  # EM and F1, one row per layer (the variant does not enter)


def test_correlation_p_values_are_corrected_within_each_family(synthetic_stats):
    results, _ = synthetic_stats
    corr = pd.read_parquet(results / "stats" / "correlations.parquet")
    assert {"C1", "C2", "C3"} <= set(corr["analysis"])
    sizes = []
    for _, family in corr.groupby(stats.correlations.CORRELATION_FAMILY, dropna=False):
        for raw, prefix in (("pearson_p", "pearson_p"), ("spearman_p", "spearman_p"), ("ols_p_cluster", "ols_p")):
            rows = family[family[raw].notna()]
            if rows.empty:
                assert family[f"{prefix}_holm"].isna().all()
                continue
            p, holm, bh = (rows[c].to_numpy(dtype=float) for c in (raw, f"{prefix}_holm", f"{prefix}_bh"))
            assert (holm >= bh - 1e-12).all() and (bh >= p - 1e-12).all() and (holm <= 1).all()
            order = np.argsort(p, kind="stable")
            assert (np.diff(holm[order]) >= -1e-12).all() and (np.diff(bh[order]) >= -1e-12).all()
            assert holm == pytest.approx(stats.multiple_testing.holm_adjust(p))
            sizes.append(len(rows))
        assert (family["significant_holm"] == (family["pearson_p_holm"] < 0.05)).all()
    # The families are the maps of layer x zone cells, so the corrections are not the identity.
    assert max(sizes) >= 16
    c3 = corr[corr["analysis"] == "C3"]
    assert (c3["pearson_p_holm"] > c3["pearson_p"]).any()


# --------------------------------------------------------------------------------------------------
# The headline: the two most damaging zones per grid
# --------------------------------------------------------------------------------------------------


def headline_for(grid: pd.DataFrame) -> pd.DataFrame:
    table = stats.headline.headline_zones(deltas_for(grid))
    return table[(table["metric"] == "f1")]


def test_headline_names_the_planted_zones_and_agrees_with_the_paper():
    table = headline_for(planted_grid(effects={("p2p", 0): -12.0, ("p2q", 4): -7.0}))
    assert list(table["rank"]) == [1, 2] and list(table["zone"]) == ["p2p", "p2q"]
    assert list(table["layer"]) == [0, 4]
    assert table["significant_holm"].all() and table["ci_excludes_zero"].all()
    assert set(table["verdict"]) == {"agrees"} and table["agrees_with_paper"].all()
    assert (table["n_questions"] == 200).all() and (table["resampling"] == "article").all()


def test_headline_without_effect_and_with_other_zones():
    null = headline_for(planted_grid(noise_sd=4.0))
    assert len(null) == 2 and set(null["verdict"]) == {"no significant drop"}
    assert not null["significant_holm"].any()
    other = headline_for(planted_grid(effects={("q2q", 2): -12.0, ("p2p", 1): -7.0}))
    assert list(other["zone"]) == ["q2q", "p2p"] and set(other["verdict"]) == {"differs"}
    # ALL is the union of the zones and does not compete.
    union = headline_for(planted_grid(effects={("all", 2): -30.0, ("p2q", 1): -9.0, ("p2p", 3): -8.0}))
    assert "all" not in set(union["zone"]) and set(union["zone"]) == {"p2q", "p2p"}
    assert stats.headline.headline_zones(tables.DELTAS.empty()).empty


def test_headline_table_of_the_synthetic_tree(synthetic_stats):
    results, _ = synthetic_stats
    headline = pd.read_parquet(results / "stats" / "headline.parquet")
    paper_f1 = headline[(headline["variant"] == "paper") & (headline["metric"] == "f1")]
    assert set(paper_f1["eval_set"]) == {"squad_dev", "xquad_en", "xquad_zh"}
    first = paper_f1[paper_f1["rank"] == 1]
    assert set(first["zone"]) == {"p2p"} and (first["layer"] == 0).all()


# --------------------------------------------------------------------------------------------------
# Cross-lingual consistency
# --------------------------------------------------------------------------------------------------


def test_kendall_tau_b_matches_scipy_with_ties_and_batches():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 5, 25).astype(float)
    y = x + rng.integers(0, 3, 25)
    assert stats.crosslingual.kendall_tau_b(x, y) == pytest.approx(sps.kendalltau(x, y).statistic)
    batch_x, batch_y = rng.normal(size=(4, 12)), rng.normal(size=(4, 12))
    expected = [sps.kendalltau(a, b).statistic for a, b in zip(batch_x, batch_y, strict=True)]
    assert stats.crosslingual.kendall_tau_b(batch_x, batch_y) == pytest.approx(expected)


def test_identical_profiles_across_languages_give_tau_one():
    english = planted_grid(
        effects={("p2p", 0): -10.0, ("p2q", 4): -5.0, ("q2q", 2): -2.0}, eval_set="xquad_en"
    )
    chinese = english.assign(eval_set="xquad_zh")
    other = planted_grid(eval_set="squad_dev", qid_prefix="s")  # different questions: not parallel
    matrices = stats.deltas.build_question_matrices(pd.concat([english, chinese, other]))
    languages = {"xquad_en": "en", "xquad_zh": "zh", "squad_dev": "en"}
    rank, question = stats.crosslingual.compute_crosslingual(matrices, None, languages, FAST)
    assert set(zip(rank["eval_a"], rank["eval_b"], strict=True)) == {("xquad_en", "xquad_zh")}
    f1 = rank[rank["metric"] == "f1"].iloc[0]
    assert f1["kendall_tau"] == pytest.approx(1.0)
    assert f1["tau_ci_low"] == pytest.approx(1.0) and f1["tau_ci_high"] == pytest.approx(1.0)
    assert f1["p_permutation"] < 0.001 and f1["n_cells"] == 30 and f1["qid_overlap"] == 1.0
    assert (f1["language_a"], f1["language_b"]) == ("en", "zh")
    f1_questions = question[question["metric"] == "f1"]
    assert (f1_questions["pearson_r"] > 0.999).all() and (f1_questions["hurt_agreement"] == 1.0).all()
    assert f1_questions["cohen_kappa"].to_numpy() == pytest.approx(np.ones(len(f1_questions)))


def test_unrelated_profiles_give_tau_near_zero():
    english = planted_grid(eval_set="xquad_en", noise_sd=8.0, rng_seed=1)
    chinese = planted_grid(eval_set="xquad_zh", noise_sd=8.0, rng_seed=2)
    matrices = stats.deltas.build_question_matrices(pd.concat([english, chinese]))
    rank, _ = stats.crosslingual.compute_crosslingual(matrices, None, {}, FAST)
    f1 = rank[rank["metric"] == "f1"].iloc[0]
    assert abs(f1["kendall_tau"]) < 0.35 and f1["p_permutation"] > 0.01


# --------------------------------------------------------------------------------------------------
# Question types and languages
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "bucket"),
    [
        ("What is the capital of France?", "what"),
        ("In what year did the war end?", "what"),
        ("Which river is the longest?", "which"),
        ("Whose idea was it?", "who"),
        ("To whom did he write?", "who"),
        ("When was it built?", "when"),
        ("Where is the tower?", "where"),
        ("Why did they leave?", "why"),
        ("How did it end?", "how"),
        ("How many people live there?", "how many/much"),
        ("How much did it cost?", "how many/much"),
        ("However, the city grew; what followed?", "what"),
        ("Name the author of the book.", "other"),
    ],
)
def test_english_question_types(question, bucket):
    assert stats.question_types.english_question_type(question) == bucket


@pytest.mark.parametrize(
    ("question", "bucket"),
    [
        ("这条河的名字是什么？", "什么"),
        ("谁创立了这家公司？", "谁"),
        ("这座塔在哪里？", "哪"),
        ("这座塔是什么时候建成的？", "何时-什么时候"),
        ("条约何时签订？", "何时-什么时候"),
        ("这个镇有多少人？", "几-多少"),
        ("他有几个孩子？", "几-多少"),
        ("他们为什么离开？", "为什么"),
        ("战争是如何结束的？", "如何-怎么"),
        ("这个药怎么用？", "如何-怎么"),
        ("该条约是否有效？", "是否"),
        ("他几乎赢得了什么比赛？", "什么"),  # 几乎 ("almost") asks nothing
        ("请说明原因。", "other"),
    ],
)
def test_chinese_question_types(question, bucket):
    assert stats.question_types.chinese_question_type(question) == bucket


def test_language_comes_from_the_config_else_from_the_text():
    config = {"splits": {"dev": {"dataset": "cmrc"}}, "datasets": {"cmrc": {"language": "zh"}}}
    assert stats.common.eval_language(config, "dev") == "zh"
    assert stats.common.eval_language(None, "dev", ["谁是作者？", "什么时候？"]) == "zh"
    assert stats.common.eval_language(None, "xquad_de", ["Wer ist das?"]) == "de"
    assert stats.common.eval_language(None, "dev", ["Who is it?"]) == "en"


def test_question_type_table_marks_small_buckets():
    grid = planted_grid(n_articles=10, per_article=6, effects={("p2p", 0): -10.0})
    qids = grid.drop_duplicates("qid")["qid"].tolist()
    texts = ["What is it?" if i % 3 else "Who is it?" for i in range(len(qids))]
    questions = pd.DataFrame({"eval_set": "dev", "qid": qids, "question": texts})
    settings = cfg.stats_config({"stats": {"seed": 1, "bootstrap": 200, "min_bucket_size": 30}})
    table = stats.question_types.compute_question_types(
        stats.deltas.build_question_matrices(grid), questions, {"dev": "en"}, settings
    )
    sizes = table.drop_duplicates(["bucket"]).set_index("bucket")["n_questions"].to_dict()
    assert sizes == {"what": 40, "who": 20}
    reported = table.drop_duplicates(["bucket"]).set_index("bucket")["reported"].to_dict()
    assert reported == {"what": True, "who": False}
    what = table[
        (table["bucket"] == "what")
        & (table["zone"] == "p2p")
        & (table["layer"] == 0)
        & (table["metric"] == "f1")
    ].iloc[0]
    assert what["ci_low"] < -10.0 < what["ci_high"]


# --------------------------------------------------------------------------------------------------
# Paper comparison
# --------------------------------------------------------------------------------------------------


def test_layer_mapping_by_relative_depth():
    assert stats.paper_comparison.map_layers_by_depth(12) == {layer: [layer] for layer in range(12)}
    assert stats.paper_comparison.map_layers_by_depth(6) == {i: [2 * i, 2 * i + 1] for i in range(6)}
    deep = stats.paper_comparison.map_layers_by_depth(24)
    assert deep[0] == [0] and deep[1] == [0] and deep[23] == [11]


def test_the_paper_grid_agrees_with_itself_and_a_shuffled_grid_does_not():
    from mrcbench.stats import paper_reference

    paper = paper_reference.paper_grid()
    assert len(paper) == 60 and paper["layer"].between(0, 11).all()
    rows = paper.rename(columns={"delta_em": "delta"}).assign(
        model="m", train_set="t", eval_set="dev", variant="paper", metric="em", mode="layer", head=-1
    )
    summary, cells = stats.paper_comparison.compare_with_paper(rows, FAST)
    row = summary.iloc[0]
    assert row["spearman_rho"] == pytest.approx(1.0) and row["top2_agree"]
    assert set(row["top2_run"].split(",")) == {"p2p", "p2q"}
    assert row["run_layers"] == 12 and row["n_cells"] == 60 and "bert-base-cased" in row["model_difference"]
    assert len(cells) == 60
    reversed_rows = rows.assign(delta=-rows["delta"])
    summary, _ = stats.paper_comparison.compare_with_paper(reversed_rows, FAST)
    assert summary.iloc[0]["spearman_rho"] == pytest.approx(-1.0) and not summary.iloc[0]["top2_agree"]


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_stats(tmp_path_factory):
    results = write_synthetic_results(tmp_path_factory.mktemp("stats"))
    written = stats.command.run_stats(results, results / "stats")
    return results, written


def test_run_stats_writes_every_table_as_parquet_and_csv(synthetic_stats):
    results, written = synthetic_stats
    names = {path.name for path in written}
    assert len(tables.STATS_TABLES) == 17
    for table in tables.STATS_TABLES:
        assert {f"{table}.parquet", f"{table}.csv"} <= names
        # the synthetic grids have no null cells (ablation.null_draws 0) and no operator but renorm: the
        # controls' tables are written empty (their content: tests/unit/test_controls.py)
        empty = pd.read_parquet(results / "stats" / f"{table}.parquet").empty
        assert empty == (table in ("null_contrasts", "operator_contrasts", "control_effects", "specificity")), table
    assert "settings.json" in names


def test_every_table_written_matches_its_declaration(synthetic_stats):
    """What mrcbench stats writes, read back, is what mrcbench/tables.py declares (non-empty tables with
    their dtypes, the empty ones with their columns)."""
    results, _ = synthetic_stats
    for name, table in tables.STATS_TABLES.items():
        table.check(pd.read_parquet(results / "stats" / f"{name}.parquet"), name)
        assert list(pd.read_csv(results / "stats" / f"{name}.csv").columns) == table.names, name


def test_the_stats_command_refuses_a_table_unlike_its_declaration_and_writes_none(tmp_path, synthetic_stats,
                                                                                   monkeypatch):
    results, _ = synthetic_stats
    config = cfg.load(results / "config.resolved.yaml")
    config["stats"] = {**config["stats"], "bootstrap": 20, "permutations": 19}
    real = stats.command.headline_zones
    monkeypatch.setattr(stats.command, "headline_zones", lambda deltas: real(deltas).astype({"rank": float}))
    out = tmp_path / "stats"
    with pytest.raises(MrcbenchError) as caught:
        stats.command.run_stats(results, out, config)
    assert str(caught.value) == (f"{out / 'headline.parquet'}: column 'rank' is float64, expected int64 "
                                 "(the headline.parquet table of mrcbench/tables.py)")
    assert not out.exists() or not any(out.iterdir())


def test_run_stats_finds_the_planted_cells_of_the_synthetic_tree(synthetic_stats):
    results, _ = synthetic_stats
    deltas = pd.read_parquet(results / "stats" / "deltas.parquet")
    layer = deltas[(deltas["mode"] == "layer") & (deltas["metric"] == "f1") & (deltas["variant"] == "paper")]
    planted = layer[(layer["zone"] == "p2p") & (layer["layer"] == 0)]
    assert len(planted) == 3 and planted["significant_holm"].all() and (planted["delta"] < -8).all()
    assert layer["significant_holm"].sum() <= 3 + 3  # the planted cells, and little else
    baselines = pd.read_parquet(results / "stats" / "baselines.parquet")
    assert (baselines["official"] - baselines["value"]).abs().max() < 1e-9
    assert set(baselines["language"]) == {"en", "zh"}
    rank = pd.read_parquet(results / "stats" / "crosslingual_rank.parquet")
    assert set(rank["eval_a"] + "/" + rank["eval_b"]) == {"xquad_en/xquad_zh"}
    types = pd.read_parquet(results / "stats" / "question_types.parquet")
    assert {"什么", "谁", "what", "how many/much"} <= set(types["bucket"])


def test_cli_main_and_user_errors(tmp_path, synthetic_stats):
    results, _ = synthetic_stats
    out = tmp_path / "stats"
    assert stats.command.main(["--results", str(results), "--out", str(out), *_file_arguments(results)]) == 0
    assert (out / "deltas.parquet").is_file()
    with pytest.raises(MrcbenchError, match="results directory not found"):
        stats.command.run_stats(tmp_path / "missing", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MrcbenchError, match="no ablation"):
        stats.command.run_stats(tmp_path / "empty", out)
    broken = tmp_path / "broken" / "ablation" / "m" / "t" / "seed1" / "dev"
    broken.mkdir(parents=True)
    pd.DataFrame({"model": ["m"], "qid": ["q"]}).to_parquet(broken / "grid.parquet")
    with pytest.raises(MrcbenchError, match=r"grid\.parquet: no column 'train_set' \(the grid\.parquet table"):
        stats.command.run_stats(tmp_path / "broken", out)


def _file_arguments(results, exclude=()) -> list[str]:
    """The explicit file arguments the workflow's stats rule passes."""
    found = stats.results.ResultFiles.discover(results)
    args = []
    for option, paths in (("--scores", found.scores), ("--metrics", found.metrics), ("--grids", found.grids),
                          ("--zone-stats", found.zone_stats)):
        args += [option, *(str(path) for path in paths if not any(part in exclude for part in path.parts))]
    return args


def test_a_stray_run_folder_beside_the_declared_files_changes_no_table(tmp_path, synthetic_stats):
    import shutil

    results, _ = synthetic_stats
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("stats"))
    declared = _file_arguments(copy)
    # A leftover run: a seed since dropped from the config, every stage's files present.
    for stage in ("predict", "ablation", "attention"):
        shutil.copytree(copy / stage / "tiny-bert" / "squad_train" / "seed1",
                        copy / stage / "tiny-bert" / "squad_train" / "seed9")
        for parquet in (copy / stage / "tiny-bert" / "squad_train" / "seed9").rglob("*.parquet"):
            frame = pd.read_parquet(parquet)
            frame["seed"] = 9
            frame.to_parquet(parquet)
    assert stats.command.main(["--results", str(copy), "--out", str(copy / "stats"), *declared]) == 0
    for table in tables.STATS_TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(copy / "stats" / f"{table}.parquet"),
                                      pd.read_parquet(results / "stats" / f"{table}.parquet"), obj=table)
    # Globbing the whole folder would have mixed the stray seed in.
    assert 9 in set(stats.results.load_results(copy).scores["seed"])


def test_two_files_holding_one_run_are_refused(tmp_path, synthetic_stats):
    results, _ = synthetic_stats
    found = stats.results.ResultFiles.discover(results)
    copied = tmp_path / "copy" / "predict" / "tiny-bert" / "squad_train" / "seed1" / "squad_dev"
    copied.mkdir(parents=True)
    (copied / "scores.parquet").write_bytes(found.scores[0].read_bytes())
    files = stats.results.ResultFiles(grids=[], zone_stats=[], scores=[*found.scores, copied / "scores.parquet"],
                              metrics=[])
    with pytest.raises(MrcbenchError, match=r"scores\.parquet and .* both hold the results of model=tiny-bert"):
        stats.results.load_results(results, files)


def test_truncated_parquet_and_bad_json_are_one_line_naming_the_file(tmp_path, synthetic_stats):
    import subprocess
    import sys

    results, _ = synthetic_stats
    found = stats.results.ResultFiles.discover(results)
    truncated = tmp_path / "grid.parquet"
    truncated.write_bytes(found.grids[0].read_bytes()[:500])
    with pytest.raises(MrcbenchError, match=r"grid\.parquet: unreadable or truncated .*delete it and re-run"):
        stats.results.load_results(results, stats.results.ResultFiles([truncated], [], found.scores, []))
    bad_json = tmp_path / "predict" / "m" / "t" / "seed1" / "e" / "metrics.json"
    bad_json.parent.mkdir(parents=True)
    bad_json.write_text('{"exact": 1')
    with pytest.raises(MrcbenchError, match=r"metrics\.json: unreadable or truncated .*delete it and re-run"):
        stats.results.load_results(results, stats.results.ResultFiles([], [], found.scores, [bad_json]))
    proc = subprocess.run([sys.executable, "-m", "mrcbench.cli", "stats", "--results", str(results),
                           "--out", str(tmp_path / "stats"), "--scores", *map(str, found.scores),
                           "--grids", str(truncated)], check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_attention_sinks_average_the_special_token_mass_per_run_over_layers_and_heads():
    from mrcbench.stats.zone_mass import attention_sinks

    rows = []
    for model, scale in (("a", 1.0), ("b", 2.0)):
        for layer in range(2):
            for head in range(2):
                for zone, mass in (("q2s", 0.1 * (layer + 1)), ("p2s", 0.2 + 0.1 * head), ("p2q", 0.9)):
                    rows.append({"model": model, "train_set": "t", "eval_set": "e", "layer": layer,
                                 "head": head, "zone": zone, "mass": mass * scale})
    sinks = attention_sinks(pd.DataFrame(rows)).set_index("model")
    assert list(sinks.columns) == ["train_set", "eval_set", "q2s", "p2s"]
    assert sinks.loc["a", "q2s"] == pytest.approx(0.15) and sinks.loc["a", "p2s"] == pytest.approx(0.25)
    assert sinks.loc["b", "q2s"] == pytest.approx(0.30) and sinks.loc["b", "p2s"] == pytest.approx(0.50)
    assert attention_sinks(pd.DataFrame(columns=["zone", "mass"])).empty


def test_crosslingual_question_summary_averages_over_layers_per_zone():
    from mrcbench.stats.crosslingual import summarise_question_agreement

    keys = {"model": "m", "variant": "paper", "metric": "f1", "eval_a": "en", "eval_b": "zh"}
    question = pd.DataFrame([
        {**keys, "zone": zone, "layer": layer, "pearson_r": r, "hurt_agreement": 0.5 + layer / 10,
         "cohen_kappa": 0.1 * layer}
        for zone, base in (("p2q", 0.2), ("p2p", 0.6)) for layer, r in enumerate((base, base + 0.2))
    ])
    summary = summarise_question_agreement(question).set_index("zone")
    assert summary.loc["p2q", "pearson_r"] == pytest.approx(0.3)
    assert summary.loc["p2p", "pearson_r"] == pytest.approx(0.7)
    assert summary.loc["p2p", "hurt_agreement"] == pytest.approx(0.55)
    assert summary.loc["p2q", "cohen_kappa"] == pytest.approx(0.05)


def test_baselines_flag_a_grid_whose_baseline_differs_from_the_prediction_scores(synthetic_stats):
    results, _ = synthetic_stats
    baselines = pd.read_parquet(results / "stats" / "baselines.parquet")
    assert "grid_mismatch" in baselines
    expected = (baselines["grid_baseline"] - baselines["scores_on_grid_questions"]).abs() > 0.05
    assert (baselines["grid_mismatch"] == expected.fillna(False)).all()
    from mrcbench.report.blocks import baseline_mismatches

    flagged = baselines.assign(grid_mismatch=[True] + [False] * (len(baselines) - 1))
    assert len(baseline_mismatches(flagged)) == 1 and baseline_mismatches(baselines.assign(grid_mismatch=False)).empty
