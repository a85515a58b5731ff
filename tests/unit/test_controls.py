"""Zone minus size-matched null contrasts (mrcbench.stats.controls) on a synthetic grid."""
import numpy as np

from mrcbench import tables
from mrcbench.stats.controls import compute_null_contrasts

from support.planted_controls import FAST, FINE, grid_with_controls, planted_grid, synthetic_grid


def test_zone_minus_null_per_cell_with_feasibility():
    table = compute_null_contrasts(synthetic_grid(), FAST)
    tables.NULL_CONTRASTS.check(table, "null_contrasts")
    f1 = table[table.metric == "f1"].set_index(["layer", "zone"])
    assert set(f1.index) == {(0, "p2q"), (1, "p2q"), (0, "q2q"), (1, "q2q")}
    assert f1.loc[(0, "p2q"), "difference"] < -15 and f1.loc[(0, "p2q"), "p_holm"] < 0.05
    assert f1.loc[(0, "p2q"), "ci_high"] < -15 and abs(f1.loc[(1, "p2q"), "difference"]) < 1
    assert f1.loc[(0, "p2q"), "valid_control"] and not f1.loc[(0, "q2q"), "valid_control"]
    assert abs(f1.loc[(0, "q2q"), "mass_match"] - 0.4) < 1e-12
    assert abs(f1.loc[(0, "q2q"), "null_removed_mass"] - 0.04) < 1e-12
    assert (f1["null_draws"] == 2).all() and (f1["n_grid_questions"] == 40).all()
    assert (f1.xs("p2q", level="zone")["n_questions"] == 40).all() and (f1.xs("q2q", level="zone")["n_questions"] == 0).all()
    # the zero operator's rows are not part of the contrast (F1 0 would dominate)
    assert f1.loc[(0, "p2q"), "zone_value"] > 50
    kl = table[table.metric == "start_kl"].set_index(["layer", "zone"])
    assert abs(kl.loc[(0, "p2q"), "difference"] - 0.2) < 1e-9
    # Holm within (run, variant, metric) over the valid cells only
    assert table.groupby("metric").size().eq(4).all() and table[~table.valid_control]["p_holm"].isna().all()


def test_no_nulls_no_rows():
    grid = synthetic_grid()
    assert compute_null_contrasts(grid[~grid.zone.str.startswith("null_")], FAST).empty
    assert compute_null_contrasts(None, FAST).empty


def test_operator_contrasts_each_operator_minus_renorm():
    from mrcbench.stats.controls import compute_operator_contrasts

    table = compute_operator_contrasts(grid_with_controls(), FINE)
    tables.OPERATOR_CONTRASTS.check(table, "operator_contrasts")
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


def specificity_of(grid, settings=FINE):
    """The specificity table of ``grid`` through the same chain as ``mrcbench stats``."""
    from mrcbench.stats.controls import (
        compute_control_effects,
        compute_operator_contrasts,
        compute_specificity,
    )
    from mrcbench.stats.deltas import build_question_matrices, compute_deltas
    from mrcbench.stats.results import paper_cells

    deltas, _ = compute_deltas(build_question_matrices(paper_cells(grid)), settings)
    effects = compute_control_effects(grid, deltas, compute_null_contrasts(grid, settings),
                                      compute_operator_contrasts(grid, settings), settings)
    return compute_specificity(effects, settings)


def test_specificity_judges_each_zone_at_its_most_damaging_layer():
    table = specificity_of(grid_with_controls())
    tables.SPECIFICITY.check(table, "specificity")
    rows = table.set_index(["zone", "measure"])
    assert set(rows.index) == {(z, m) for z in ("p2q", "q2p", "p2p") for m in ("f1", "logprob_delta")}
    for measure in ("f1", "logprob_delta"):
        p2q = rows.loc[("p2q", measure)]
        assert p2q["worst_layer"] == 0 and p2q["control"] == "null" and p2q["verdict"] == "specific"
        assert p2q["layers_exceeding"] == "0" and p2q["null_valid_layers"] == "0,1" and p2q["null_difference"] < 0
        q2p = rows.loc[("q2p", measure)]  # its null hurts as much as the zone
        assert q2p["control"] == "null" and q2p["verdict"] == "mass-driven" and q2p["layers_exceeding"] == ""
        p2p = rows.loc[("p2p", measure)]  # infeasible null; uniform hurts in layer 1 only, not at its worst (0)
        assert not p2p["null_valid"] and p2p["null_valid_layers"] == "" and p2p["uniform"]
        assert p2p["control"] == "uniform" and p2p["verdict"] == "amount"
    assert abs(rows.loc[("p2q", "f1"), "null_difference"] + 18) < 1.5
    assert abs(rows.loc[("p2q", "f1"), "zone_delta"] + 20) < 1


def test_a_zone_specific_where_a_few_questions_cannot_be_matched_is_reported_specific():
    """Today's default grid in miniature: P2Q hurts in layers 1-3, where 5-8% of its null draws miss the
    mass, and nowhere else; its null costs nothing. The rule that a null counts only where every question
    matched compared P2Q with its null in layers 0, 4 and 5 alone (where P2Q does nothing) and called it
    non-specific."""
    rows = specificity_of(planted_grid()).set_index(["zone", "measure"])
    p2q = rows.loc[("p2q", "f1")]
    assert p2q["worst_layer"] == 2 and p2q["null_valid"] and abs(p2q["feasible_fraction"] - 0.95) < 1e-12
    assert p2q["null_n_questions"] == 95 and p2q["verdict"] == "specific" and p2q["control"] == "null"
    assert p2q["layers_exceeding"] == "1,2,3" and p2q["null_valid_layers"] == "0,1,2,3,4,5"
    assert p2q["null_ci_high"] < -20
    assert rows.loc[("p2q", "logprob_delta"), "verdict"] == "specific"
    # P2P: no feasible null and no uniform cell -> no valid control, never a verdict
    assert rows.loc[("p2p", "f1"), "verdict"] == "no valid control" and rows.loc[("p2p", "f1"), "control"] == "none"


def test_a_zone_no_worse_than_its_null_is_mass_driven():
    rows = specificity_of(planted_grid(p2q_null=(0, 18, 25, 7, 0, 0), p2q_feasible=(0.9,) * 6))
    p2q = rows.set_index(["zone", "measure"]).loc[("p2q", "f1")]
    assert p2q["null_valid"] and p2q["verdict"] == "mass-driven" and p2q["layers_exceeding"] == ""
    assert abs(p2q["zone_delta_matched"] - p2q["null_delta"]) < 1.5


def test_below_the_feasible_share_the_null_is_no_control_and_uniform_decides():
    # 85% matched < 0.9: the null is not a control anywhere; uniform as damaging as removal at P2P's worst layer
    grid = planted_grid(p2q_feasible=(0.85,) * 6, p2p_uniform=(2, 10, 20, 8, 4, 0))
    rows = specificity_of(grid).set_index(["zone", "measure"])
    p2q = rows.loc[("p2q", "f1")]
    assert not p2q["null_valid"] and p2q["null_valid_layers"] == "" and p2q["verdict"] == "no valid control"
    p2p = rows.loc[("p2p", "f1")]
    assert p2p["control"] == "uniform" and p2p["verdict"] == "pattern" and p2p["worst_layer"] == 2
    assert p2p["uniform_ci_high"] < 0 and abs(p2p["uniform_minus_removal"]) < 1
    # uniform harmless: the amount matters; uniform at half the damage: partly the pattern
    harmless = specificity_of(planted_grid(p2p_uniform=(0,) * 6)).set_index(["zone", "measure"])
    assert harmless.loc[("p2p", "f1"), "verdict"] == "amount"
    half = specificity_of(planted_grid(p2p_uniform=(1, 5, 10, 4, 2, 0))).set_index(["zone", "measure"])
    assert half.loc[("p2p", "f1"), "verdict"] == "partly pattern"
    # uniform too noisy to be told from zero or from removal: inconclusive, never "harmless"
    noisy = specificity_of(planted_grid(p2p_uniform=(0, 6, 12, 5, 2, 0), uniform_noise=60.0))
    assert noisy.set_index(["zone", "measure"]).loc[("p2p", "f1"), "verdict"] == "inconclusive"


def test_a_zone_that_does_not_hurt_gets_no_verdict():
    """A zone whose own drop is not significant has nothing for a control to explain: not "mass-driven"."""
    rows = specificity_of(planted_grid(p2q_effect=(0, 0.1, 0.2, 0, 0, 0), p2q_null=(0, 0.1, 0.2, 0, 0, 0)))
    p2q = rows.set_index(["zone", "measure"]).loc[("p2q", "f1")]
    assert p2q["null_valid"] and p2q["verdict"] == "no significant effect" and p2q["control"] == "null"


def test_null_contrast_pairs_only_the_matched_questions():
    table = compute_null_contrasts(planted_grid(), FINE)
    f1 = table[(table.metric == "f1") & (table.zone == "p2q")].set_index("layer")
    assert f1.loc[2, "n_questions"] == 95 and f1.loc[2, "n_grid_questions"] == 100
    assert f1.loc[3, "n_questions"] == 92 and abs(f1.loc[3, "feasible_fraction"] - 0.92) < 1e-12
    assert f1["valid_control"].all() and (f1.loc[[1, 2, 3], "p_holm"] < 0.05).all()
    # the zone's effect on the matched questions beside its effect on all of them
    assert abs(f1.loc[2, "zone_delta"] - f1.loc[2, "zone_delta_all"]) < 1
    p2p = table[(table.metric == "f1") & (table.zone == "p2p")]
    assert not p2p["valid_control"].any() and (p2p["n_questions"] == 0).all() and p2p["p_holm"].isna().all()
    assert not p2p["significant_holm"].any()


def test_specificity_is_empty_without_controls():
    grid = grid_with_controls(uniform=False)
    no_nulls = grid[~grid.zone.str.startswith("null_")]
    assert specificity_of(no_nulls, FAST).empty


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
