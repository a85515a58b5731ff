"""Zone minus size-matched null contrasts (mrcbench.stats.controls) on a synthetic grid."""
import numpy as np
import pandas as pd

from mrcbench import config as cfg
from mrcbench.stats.controls import NULL_CONTRAST_COLUMNS, compute_null_contrasts

FAST = cfg.stats_config({"stats": {"bootstrap": 200, "permutations": 199, "seed": 1}})
FINE = cfg.stats_config({"stats": {"bootstrap": 200, "permutations": 1999, "seed": 1}})  # p down to 5e-4: room for Holm over 12 cells


def synthetic_grid(n_questions=40, seed=0):
    """p2q hurts 20 F1 more than its null in layer 0 and no more in layer 1; q2q's null is infeasible."""
    rng = np.random.default_rng(seed)
    rows = []
    qids = [f"q{i}" for i in range(n_questions)]
    for qid in qids:
        article = f"a{int(qid[1:]) % 12}"
        base = {"model": "m", "train_set": "t", "eval_set": "e", "seed": 1, "variant": "paper", "mode": "layer",
                "operator": "renorm", "head": -1, "qid": qid, "article": article, "em": 1.0,
                "start_logprob_delta": 0.0, "end_logprob_delta": 0.0, "start_kl": 0.0, "end_kl": 0.0}
        for layer in (0, 1):
            for zone, shift in (("p2q", 20.0 if layer == 0 else 0.0), ("q2q", 5.0)):
                noise = rng.normal(0, 1)
                rows.append({**base, "layer": layer, "zone": zone, "f1": 80 - shift + noise, "null_draw": -1,
                             "removed_mass": 0.1, "mass_match": np.nan, "null_feasible": pd.NA,
                             "start_kl": 0.5 + shift / 100})
                for draw in (0, 1):
                    rows.append({**base, "layer": layer, "zone": f"null_{zone}", "f1": 80 + noise + rng.normal(0, 1),
                                 "null_draw": draw, "removed_mass": 0.1 if zone == "p2q" else 0.04,
                                 "mass_match": 1.0 if zone == "p2q" else 0.4,
                                 "null_feasible": zone == "p2q", "start_kl": 0.5})
            rows.append({**base, "layer": layer, "zone": "p2q", "operator": "zero", "f1": 0.0, "null_draw": -1,
                         "removed_mass": 0.1, "mass_match": np.nan, "null_feasible": pd.NA})
    frame = pd.DataFrame(rows)
    frame["null_feasible"] = frame["null_feasible"].astype("boolean")
    return frame


def test_zone_minus_null_per_cell_with_feasibility():
    table = compute_null_contrasts(synthetic_grid(), FAST)
    assert list(table.columns) == NULL_CONTRAST_COLUMNS
    f1 = table[table.metric == "f1"].set_index(["layer", "zone"])
    assert set(f1.index) == {(0, "p2q"), (1, "p2q"), (0, "q2q"), (1, "q2q")}
    assert f1.loc[(0, "p2q"), "difference"] < -15 and f1.loc[(0, "p2q"), "p_holm"] < 0.05
    assert f1.loc[(0, "p2q"), "ci_high"] < -15 and abs(f1.loc[(1, "p2q"), "difference"]) < 1
    assert f1.loc[(0, "p2q"), "feasible"] and not f1.loc[(0, "q2q"), "feasible"]
    assert abs(f1.loc[(0, "q2q"), "mass_match"] - 0.4) < 1e-12
    assert abs(f1.loc[(0, "q2q"), "null_removed_mass"] - 0.04) < 1e-12
    assert (f1["null_draws"] == 2).all() and (f1["n_questions"] == 40).all()
    # the zero operator's rows are not part of the contrast (F1 0 would dominate)
    assert f1.loc[(0, "p2q"), "zone_value"] > 50
    kl = table[table.metric == "start_kl"].set_index(["layer", "zone"])
    assert abs(kl.loc[(0, "p2q"), "difference"] - 0.2) < 1e-9
    # Holm within (run, variant, metric): four cells per family
    assert table.groupby("metric").size().eq(4).all()


def test_no_nulls_no_rows():
    grid = synthetic_grid()
    assert compute_null_contrasts(grid[~grid.zone.str.startswith("null_")], FAST).empty
    assert compute_null_contrasts(None, FAST).empty


def grid_with_controls(n_questions=40, seed=3, uniform=True):
    """Known answers: p2q hurts F1 and logprob beyond its (feasible) null in layer 0 only; q2p has a feasible
    null that hurts as much as the zone (no specificity); p2p's null is infeasible in both layers and its
    ``uniform`` operator hurts in layer 1 only. The zero operator hurts every zone by 30 F1 against renorm."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_questions):
        qid = f"q{i}"
        base = {"model": "m", "train_set": "t", "eval_set": "e", "seed": 1, "variant": "paper", "qid": qid,
                "article": f"a{i % 12}", "em": 1.0, "start_kl": 0.0, "end_kl": 0.0, "head": -1}
        rows.append({**base, "mode": "baseline", "operator": "renorm", "layer": -1, "zone": "none", "f1": 90.0,
                     "start_logprob_delta": 0.0, "end_logprob_delta": 0.0, "null_draw": -1,
                     "removed_mass": 0.0, "mass_match": np.nan, "null_feasible": pd.NA})
        for layer in (0, 1):
            for zone, effect, null_effect, feasible in (
                ("p2q", 20.0 if layer == 0 else 2.0, 2.0, True),
                ("q2p", 10.0, 10.0, True),
                ("p2p", 15.0, 3.0, False),
            ):
                noise = rng.normal(0, 1)
                lp = -effect / 10 + rng.normal(0, 0.05)
                cell = {**base, "mode": "layer", "layer": layer, "zone": zone, "null_draw": -1,
                        "removed_mass": 0.5, "mass_match": np.nan, "null_feasible": pd.NA}
                rows.append({**cell, "operator": "renorm", "f1": 90 - effect + noise,
                             "start_logprob_delta": lp, "end_logprob_delta": lp})
                rows.append({**cell, "operator": "zero", "f1": 60 - effect + noise,
                             "start_logprob_delta": lp - 1, "end_logprob_delta": lp - 1})
                if uniform:
                    hurt = 25.0 if (zone == "p2p" and layer == 1) else 0.0
                    ulp = -hurt / 10 + rng.normal(0, 0.05)
                    rows.append({**cell, "operator": "uniform", "f1": 90 - hurt + rng.normal(0, 1),
                                 "start_logprob_delta": ulp, "end_logprob_delta": ulp})
                nlp = -null_effect / 10 + rng.normal(0, 0.05)
                rows.append({**cell, "operator": "renorm", "zone": f"null_{zone}", "null_draw": 0,
                             "f1": 90 - null_effect + noise + rng.normal(0, 1), "start_logprob_delta": nlp,
                             "end_logprob_delta": nlp, "removed_mass": 0.5 if feasible else 0.1,
                             "mass_match": 1.0 if feasible else 0.2, "null_feasible": feasible})
    frame = pd.DataFrame(rows)
    frame["null_feasible"] = frame["null_feasible"].astype("boolean")
    return frame


def test_operator_contrasts_each_operator_minus_renorm():
    from mrcbench.stats.controls import OPERATOR_CONTRAST_COLUMNS, compute_operator_contrasts

    table = compute_operator_contrasts(grid_with_controls(), FINE)
    assert list(table.columns) == OPERATOR_CONTRAST_COLUMNS
    assert set(table["operator"]) == {"zero", "uniform"} and not table["zone"].str.startswith("null_").any()
    f1 = table[table.metric == "f1"].set_index(["operator", "layer", "zone"])
    assert len(f1) == 2 * 2 * 3
    assert np.allclose(f1.xs("zero")["difference"], -30.0)
    assert (f1.xs("zero")["p_holm"] < 0.05).all()
    # uniform keeps P2Q's F1 (90) where renorm loses 20: +20 against renorm
    assert abs(f1.loc[("uniform", 0, "p2q"), "difference"] - 20.0) < 1.0
    lp = table[table.metric == "logprob_delta"].set_index(["operator", "layer", "zone"])
    assert np.allclose(lp.xs("zero")["difference"], -1.0)
    # one Holm family per (run, variant, metric): both operators' 12 cells together
    assert table.groupby("metric").size().eq(12).all()
    grid = grid_with_controls()
    assert compute_operator_contrasts(grid[grid.operator == "renorm"], FAST).empty


def test_specificity_names_the_layers_beyond_the_null_and_falls_back_to_uniform():
    from mrcbench.stats.controls import SPECIFICITY_COLUMNS, compute_specificity

    grid = grid_with_controls()
    table = compute_specificity(grid, compute_null_contrasts(grid, FINE), FINE)
    assert list(table.columns) == SPECIFICITY_COLUMNS
    rows = table.set_index(["zone", "measure"])
    assert set(rows.index) == {(z, m) for z in ("p2q", "q2p", "p2p") for m in ("f1", "logprob_delta")}
    for measure in ("f1", "logprob_delta"):
        p2q = rows.loc[("p2q", measure)]
        assert p2q["control"] == "null" and p2q["layers_exceeding"] == "0" and p2q["n_exceeding"] == 1
        assert p2q["n_feasible"] == 2 and p2q["n_infeasible"] == 0 and p2q["difference"] < 0
        q2p = rows.loc[("q2p", measure)]
        assert q2p["control"] == "null" and q2p["layers_exceeding"] == "" and not q2p["significant_holm"]
        p2p = rows.loc[("p2p", measure)]
        # p2p's null is infeasible: its own (weaker) null is not used; the uniform operator hurts in layer 1
        assert p2p["control"] == "uniform" and p2p["n_feasible"] == 0 and p2p["n_infeasible"] == 2
        assert p2p["layers_exceeding"] == "1"
    assert abs(rows.loc[("p2q", "f1"), "difference"] - (-(18 + 0) / 2)) < 1.5
    assert abs(rows.loc[("p2p", "f1"), "difference"] - (-25 / 2)) < 1.5
    assert rows.loc[("p2q", "f1"), "significant_holm"]


def test_specificity_without_uniform_says_none_for_an_infeasible_null():
    from mrcbench.stats.controls import compute_specificity

    grid = grid_with_controls(uniform=False)
    table = compute_specificity(grid, compute_null_contrasts(grid, FAST), FAST).set_index(["zone", "measure"])
    assert table.loc[("p2p", "f1"), "control"] == "none" and np.isnan(table.loc[("p2p", "f1"), "difference"])
    assert table.loc[("p2q", "f1"), "control"] == "null"
    assert compute_specificity(grid, pd.DataFrame(), FAST).empty


def test_contrasts_carry_each_side_as_a_change_against_the_unmasked_pass():
    from mrcbench.stats.controls import compute_operator_contrasts

    grid = grid_with_controls()
    nulls = compute_null_contrasts(grid, FAST).set_index(["metric", "layer", "zone"])
    assert abs(nulls.loc[("f1", 0, "p2q"), "zone_delta"] + 20) < 1 and abs(nulls.loc[("f1", 0, "p2q"), "null_delta"] + 2) < 1
    assert abs(nulls.loc[("logprob_delta", 0, "p2q"), "zone_delta"] + 2) < 0.1
    assert abs(nulls.loc[("logprob_delta", 0, "p2q"), "null_delta"] + 0.2) < 0.1
    operators = compute_operator_contrasts(grid, FAST).set_index(["operator", "metric", "layer", "zone"])
    assert abs(operators.loc[("zero", "f1", 0, "p2q"), "operator_delta"] + 50) < 1
    assert abs(operators.loc[("zero", "f1", 0, "p2q"), "renorm_delta"] + 20) < 1
    assert abs(operators.loc[("uniform", "f1", 1, "p2p"), "operator_delta"] + 25) < 1
    # without baseline rows the EM/F1 deltas are unknown (NaN), never the raw score
    no_base = compute_null_contrasts(grid[grid["mode"] != "baseline"], FAST)
    assert no_base[no_base.metric == "f1"]["zone_delta"].isna().all()
