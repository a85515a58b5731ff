"""Zone minus size-matched null contrasts (mrcbench.stats.controls) on a synthetic grid."""
import numpy as np
import pandas as pd

from mrcbench.stats.common import StatsSettings
from mrcbench.stats.controls import NULL_CONTRAST_COLUMNS, compute_null_contrasts

FAST = StatsSettings(n_bootstrap=200, n_permutations=199, seed=1)


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
