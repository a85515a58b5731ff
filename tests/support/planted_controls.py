"""Planted grids with controls, whose right verdicts are known: the controls' unit tests and the
report's Controls tests read the same ones."""
import numpy as np
import pandas as pd

from mrcbench import config as cfg

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


def planted_grid(layers=6, n_questions=100, p2q_effect=(0, 18, 25, 7, 0, 0), p2q_null=(0,) * 6,
                 p2q_feasible=(1.0, 0.95, 0.95, 0.92, 1.0, 1.0), p2p_effect=(2, 10, 20, 8, 4, 0),
                 p2p_uniform=None, p2p_feasible=0.0, uniform_noise=1.0, seed=7):
    """A synthetic grid with known answers. Per layer: P2Q's ΔF1 (``p2q_effect``, points lost), its null's
    and the share of questions whose null draw matched (the others: null_feasible False, no outcome, as the
    grid writes them); P2P likewise, with ``p2p_uniform`` (None: no uniform cells) the F1 that uniform costs.
    Questions over 20 articles; noise 1 F1 point."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_questions):
        qid = f"q{i:03d}"
        base = {"model": "m", "train_set": "t", "eval_set": "e", "seed": 1, "variant": "paper", "qid": qid,
                "article": f"a{i % 20}", "em": 1.0, "start_kl": 0.0, "end_kl": 0.0, "head": -1, "null_draw": -1,
                "mass_match": np.nan, "null_feasible": pd.NA}
        rows.append({**base, "mode": "baseline", "operator": "renorm", "layer": -1, "zone": "none", "f1": 80.0,
                     "start_logprob_delta": 0.0, "end_logprob_delta": 0.0, "removed_mass": 0.0})
        for layer in range(layers):
            for zone, effect, null_effect, share, uniform in (
                ("p2q", p2q_effect[layer], p2q_null[layer], p2q_feasible[layer], None),
                ("p2p", p2p_effect[layer], 0.0, p2p_feasible, None if p2p_uniform is None else p2p_uniform[layer]),
            ):
                cell = {**base, "mode": "layer", "layer": layer, "removed_mass": 0.3}
                lp = -effect / 20 + rng.normal(0, 0.02)
                rows.append({**cell, "operator": "renorm", "zone": zone, "f1": 80 - effect + rng.normal(0, 1),
                             "start_logprob_delta": lp, "end_logprob_delta": lp})
                if uniform is not None:
                    ulp = -uniform / 20 + rng.normal(0, 0.02)
                    rows.append({**cell, "operator": "uniform", "zone": zone,
                                 "f1": 80 - uniform + rng.normal(0, uniform_noise),
                                 "start_logprob_delta": ulp, "end_logprob_delta": ulp})
                matched = (i * 37 + layer * 11) % n_questions < round(share * n_questions)
                nlp = -null_effect / 20 + rng.normal(0, 0.02)
                rows.append({**cell, "operator": "renorm", "zone": f"null_{zone}", "null_draw": 0,
                             "f1": 80 - null_effect + rng.normal(0, 1) if matched else np.nan,
                             "start_logprob_delta": nlp if matched else np.nan,
                             "end_logprob_delta": nlp if matched else np.nan,
                             "mass_match": 1.0 if matched else 0.4, "null_feasible": bool(matched)})
    frame = pd.DataFrame(rows)
    frame["null_feasible"] = frame["null_feasible"].astype("boolean")
    return frame
