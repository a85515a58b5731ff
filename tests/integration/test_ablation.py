"""The ablation grid: fast (prefix reuse) == naive (one forward per cell), cells, and the grid table."""
import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import BASELINE, Cell, grid_cells
from mrcbench.grid.run import run_grid, run_grid_naive
from mrcbench.grid.table import ablate
from mrcbench.masking.controller import ZoneAttention
from mrcbench.masking.nulls import NullSettings
from mrcbench.masking.plan import MaskPlan
from mrcbench.qa.decoding import Predictions
from mrcbench.qa.features import EvalFeatures
from mrcbench.tables import EFFECT_COLUMNS, GRID_COLUMNS
from mrcbench.zones import ALL_ZONE_OPTIONS, PAD, PASSAGE, QUESTION, SPECIAL, ZONES

from support.grids import ARCHS, N_HEADS, N_LAYERS, _one_thread, make_batches, tiny_model  # noqa: F401 (autouse fixture)


def cells_of(n_layers, n_heads, zones=ZONES, modes=("layer",), operators=("renorm",), null_draws=0):
    """:func:`grid_cells` of these tests: by default the five zones, mode layer, renorm, no nulls."""
    return grid_cells(n_layers, n_heads, zones, modes, operators, null_draws, {})

TIE = 1e-5
"""Two positions whose reference logits lie within this are a tie: float noise may pick either."""


def assert_same_predictions(ours: np.ndarray, reference: np.ndarray, what: str) -> tuple[int, int]:
    """The same argmax in every row, except where the reference's best two positions tie within
    :data:`TIE` (tiny random models give such ties, e.g. once a layer's whole attention is blanked, and
    which one wins then depends on the order the CPU's kernels sum in); there ours must pick one of the
    tied positions. Returns (rows checked exactly, rows)."""
    picked = ours.argmax(1)
    tied = reference >= (reference.max(1) - TIE)[:, None]
    assert tied[np.arange(len(picked)), picked].all(), (what, picked, reference.argmax(1))
    untied = tied.sum(1) == 1
    np.testing.assert_array_equal(picked[untied], reference.argmax(1)[untied], err_msg=what)
    return int(untied.sum()), len(picked)


def assert_same_grid(fast, naive):
    assert fast.keys() == naive.keys()
    checked = rows = 0
    for cell in naive:
        for name in ("start_logits", "end_logits"):
            ours, reference = getattr(fast[cell], name), getattr(naive[cell], name)
            np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0, err_msg=f"{cell} {name}")
            exact, total = assert_same_predictions(ours, reference, f"{cell} {name} predictions")
            checked, rows = checked + exact, rows + total
        np.testing.assert_allclose(fast[cell].removed_mass, naive[cell].removed_mass, atol=1e-6, err_msg=str(cell))
    assert checked > rows / 2, f"only {checked} of {rows} rows have a unique best position: the check would be vacuous"


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_grid_equals_naive_grid(arch):
    model = tiny_model(arch)
    batches = make_batches(model.config)
    cells = cells_of(N_LAYERS, N_HEADS, ALL_ZONE_OPTIONS, modes=("layer", "head", "from_layer"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path must not fall back for these architectures
        fast = run_grid(model, batches, cells, "paper", max_stack=5)
    naive = run_grid_naive(model, batches, cells, "paper")
    assert_same_grid(fast, naive)
    # masking changes the answer logits, and the baseline is the plain model
    assert not np.allclose(fast[Cell("p2p", 0)].start_logits, fast[BASELINE].start_logits)
    with torch.no_grad():
        plain = model(**{k: v for k, v in batches[1].items() if k != "zone_ids"}).start_logits
    np.testing.assert_array_equal(fast[BASELINE].start_logits[2:, : plain.shape[1]], plain)


@pytest.mark.parametrize("arch", ["bert", "modernbert", "deberta-v3"])
def test_fast_grid_equals_naive_grid_clean_variant(arch):
    model = tiny_model(arch, seed=3)
    batches = make_batches(model.config, seed=3)
    cells = cells_of(N_LAYERS, N_HEADS, ("q2p", "p2q", "all"), modes=("layer", "head", "from_layer"))
    assert_same_grid(run_grid(model, batches, cells, "clean", max_stack=1), run_grid_naive(model, batches, cells, "clean"))


def test_unrecognised_architecture_falls_back_to_naive():
    model = tiny_model("bert")
    model.qa_outputs = nn.Sequential(model.qa_outputs)  # not the recognised nn.Linear span head
    batches = make_batches(model.config)
    cells = [BASELINE, Cell("p2q", 1)]
    with pytest.warns(RuntimeWarning, match="running the naive ablation grid"):
        fast = run_grid(model, batches, cells, "paper")
    assert_same_grid(fast, run_grid_naive(model, batches, cells, "paper"))


def test_deberta_with_convolution_falls_back_to_naive():
    """DeBERTa-v2's optional convolution runs in the encoder loop after layer 0, outside the layer modules."""
    model_class, make_config = ARCHS["deberta-v2"]
    torch.manual_seed(0)
    config = make_config()
    config.conv_kernel_size = 3
    model = model_class(config).eval()
    batches = make_batches(model.config)
    cells = [BASELINE, Cell("p2p", 0), Cell("q2p", 2)]
    with pytest.warns(RuntimeWarning, match="running the naive ablation grid"):
        fast = run_grid(model, batches, cells, "clean")
    assert_same_grid(fast, run_grid_naive(model, batches, cells, "clean"))


def test_grid_leaves_the_model_as_it_was():
    model = tiny_model("bert")
    reference = copy.deepcopy(model)
    batches = make_batches(model.config)
    run_grid(model, batches, [BASELINE, Cell("p2q", 1)], "paper")
    assert model.config._attn_implementation == "eager"
    inputs = {k: v for k, v in batches[0].items() if k != "zone_ids"}
    with torch.no_grad():
        assert torch.equal(model(**inputs).start_logits, reference(**inputs).start_logits)


def test_grid_cells_and_cell_validation():
    cells = cells_of(12, 12, modes=("layer", "head", "from_layer"))
    assert cells[0] == BASELINE
    assert len(cells) == 1 + 5 * 12 + 5 * 12 * 12 + 5 * 12
    assert len(set(cells)) == len(cells)
    assert Cell("p2q", 3, mode="from_layer").masked_layers(6) == [3, 4, 5]
    assert Cell("p2q", 3, head=2, mode="head").masked_layers(6) == [3]
    assert Cell("p2q", 3, head=2, mode="head").columns() == {
        "mode": "head", "operator": "renorm", "layer": 3, "head": 2, "zone": "p2q", "null_draw": -1
    }
    assert BASELINE.columns() == {
        "mode": "baseline", "operator": "renorm", "layer": -1, "head": -1, "zone": "none", "null_draw": -1
    }
    assert Cell("null_p2q", 2, null_draw=1).columns()["null_draw"] == 1
    with pytest.raises(MrcbenchError, match="unknown attention zone"):
        Cell("q3p", 1)
    with pytest.raises(MrcbenchError, match="unknown ablation mode"):
        Cell("p2q", 1, mode="neuron")
    with pytest.raises(MrcbenchError, match="needs head index"):
        Cell("p2q", 1, mode="head")
    with pytest.raises(MrcbenchError, match="out of range"):
        Cell("p2q", 7).masked_layers(6)
    with pytest.raises(MrcbenchError, match="unknown zone variant"):
        run_grid(tiny_model("bert"), [], [BASELINE], "exact")


def eval_features(batches, example_ids):
    """A features.EvalFeatures of the windows of ``batches`` (unpadded again): q1 has two windows, q2
    and q3 one each, ..."""
    rows = {key: [] for key in ("input_ids", "attention_mask", "token_type_ids", "zone_ids")}
    for batch in batches:
        for index in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][index].sum())
            for key, values in rows.items():
                if key in batch:
                    values.append(batch[key][index, :length].tolist())
    return EvalFeatures(
        input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
        token_type_ids=rows["token_type_ids"] or None, zone_ids=rows["zone_ids"],
        offset_mapping=[[None] * len(ids) for ids in rows["input_ids"]], example_ids=example_ids,
        token_is_max_context=[{} for _ in example_ids], window_starts=[0] * len(example_ids),
        pad_token_id=0, max_seq_length=max(map(len, rows["input_ids"])), pad_to_max_length=False,
    )


def test_ablate_returns_the_long_grid_table():
    model = tiny_model("bert")
    batches = make_batches(model.config)
    example_ids = ["q1", "q1", "q2", "q3", "q3"]
    features = eval_features(batches, example_ids)
    articles = {"q1": "A", "q2": "A", "q3": "B"}

    def decode(start_logits, end_logits):  # best window by start score, answer = "start-end" positions
        best = {}
        rows = zip(example_ids, start_logits, end_logits, features.lengths, strict=True)
        for window, (qid, start, end, length) in enumerate(rows):
            start, end = start[:length], end[:length]  # a window's own tokens (as real decoding)
            candidate = (start.max(), f"{start.argmax()}-{end.argmax()}", (window, start.argmax(), end.argmax()))
            best[qid] = max(best.get(qid, candidate), candidate, key=lambda c: c[0])
        return Predictions(answers={qid: text for qid, (_, text, _) in best.items()},
                           best_span={qid: span for qid, (_, _, span) in best.items()})

    baseline_predictions = {}

    def score(predictions):
        if not baseline_predictions:
            baseline_predictions.update(predictions)
        em = [float(predictions[qid] == baseline_predictions[qid]) for qid in predictions]
        return pd.DataFrame({"qid": list(predictions), "article": [articles[q] for q in predictions], "em": em,
                             "f1": em})

    cells = cells_of(N_LAYERS, N_HEADS, ("p2q", "p2p", "all_paper_quirk"), modes=("layer", "from_layer"))
    keys = {"model": "tiny-bert", "train_set": "squad", "eval_set": "squad-dev", "seed": 7}
    frame = ablate(model, features, cells, "paper", decode, score, keys, batch_size=32, cells_per_pass=4,
                   progress=False)
    assert tuple(frame.columns) == GRID_COLUMNS
    assert len(frame) == len(cells) * 3
    baseline = frame[frame["mode"] == "baseline"]
    assert (baseline.layer == -1).all() and (baseline["head"] == -1).all() and (baseline.zone == "none").all()
    assert (baseline.em == 1).all() and (baseline.removed_mass == 0).all()
    assert set(frame.zone) == {"none", "p2q", "p2p", "all_paper_quirk"}
    assert frame.loc[frame.zone == "all_paper_quirk", "removed_mass"].isna().all()
    grid = run_grid(model, batches, [Cell("p2q", 1)], "paper")[Cell("p2q", 1)]
    q1 = frame[(frame.zone == "p2q") & (frame.layer == 1) & (frame["mode"] == "layer") & (frame.qid == "q1")]
    assert q1.removed_mass.item() == pytest.approx(grid.removed_mass[:2].mean())
    assert 0 < q1.removed_mass.item() < 1
    assert (frame.variant == "paper").all() and (frame.model == "tiny-bert").all() and (frame.seed == 7).all()
    assert (frame.operator == "renorm").all()
    # the continuous measure: 0 for the baseline, computed on the unmasked answer's window (q1: its 2nd)
    assert (baseline[list(EFFECT_COLUMNS)] == 0).all().all()
    base = run_grid(model, batches, [BASELINE], "paper")[BASELINE]
    cell = grid
    lengths = features.lengths[:2]  # q1's two windows
    window = int(base.start_logits[1, : lengths[1]].max() > base.start_logits[0, : lengths[0]].max())
    length = lengths[window]

    def logp(logits):
        logits = logits[window, :length].astype(np.float64)
        return logits - np.log(np.exp(logits).sum())

    start_token = base.start_logits[window, :length].argmax()
    assert q1.start_logprob_delta.item() == pytest.approx(
        logp(cell.start_logits)[start_token] - logp(base.start_logits)[start_token], abs=1e-6)
    p = np.exp(logp(base.end_logits))
    assert q1.end_kl.item() == pytest.approx((p * (logp(base.end_logits) - logp(cell.end_logits))).sum(), abs=1e-6)
    assert q1.end_kl.item() > 0 and q1.start_kl.item() > 0
    masked = frame[frame["mode"] != "baseline"]
    assert (masked[["start_kl", "end_kl"]] >= 0).all().all() and masked.start_logprob_delta.notna().all()
    naive = ablate(model, features, cells, "paper", decode, score, keys, batch_size=32, cells_per_pass=16, fast=False,
                   progress=False)
    floats = ["removed_mass", *EFFECT_COLUMNS]
    pd.testing.assert_frame_equal(frame.drop(columns=floats), naive.drop(columns=floats))
    for column in floats:
        np.testing.assert_allclose(frame[column], naive[column], atol=1e-5, err_msg=column)
    # batches of two windows, longest first (the default) or in feature order: decoding gets the same
    # logits in feature order (up to float rounding; positions past a window's length are padding).
    # all_paper_quirk unmasks padding, so it depends on the padding (the paper pads every window to 512).
    assert features.length_order() != list(range(len(example_ids)))
    cells = [cell for cell in cells if cell.zone != "all_paper_quirk"]
    frame = frame[frame.zone != "all_paper_quirk"].reset_index(drop=True)
    seen = {}
    for sort_by_length in (True, False):
        logits = seen[sort_by_length] = []

        def recording_decode(start_logits, end_logits, logits=logits):
            logits.append([row[:length] for row, length in zip(start_logits, features.lengths, strict=True)])
            logits.append([row[:length] for row, length in zip(end_logits, features.lengths, strict=True)])
            return decode(start_logits, end_logits)

        pairs = ablate(model, features, cells, "paper", recording_decode, score, keys, batch_size=2,
                       cells_per_pass=16, progress=False, sort_by_length=sort_by_length)
        assert len(pairs) == len(frame)
        np.testing.assert_allclose(pairs.removed_mass, frame.removed_mass, atol=1e-6)
    for ours, reference in zip(seen[True], seen[False], strict=True):
        for row, reference_row in zip(ours, reference, strict=True):
            np.testing.assert_allclose(row, reference_row, atol=1e-5, rtol=0)


def test_fast_grid_replays_unread_attention_with_fused_kernels(monkeypatch):
    """fused=True sends the replayed layers without a reader of their probabilities through sdpa
    (fp32 only); fused=False and the naive grid stay eager. Both agree with the naive grid."""
    from mrcbench.masking import attention_function
    from mrcbench.runtime import precision

    calls = []
    fused_attention = attention_function.fused_attention

    def counting(*args, **kwargs):
        calls.append(args[1].dtype)
        return fused_attention(*args, **kwargs)

    monkeypatch.setattr(attention_function, "fused_attention", counting)
    model = tiny_model("bert")
    batches = make_batches(model.config)
    cells = cells_of(N_LAYERS, N_HEADS, ("p2q", "all"), modes=("layer",))
    naive = run_grid_naive(model, batches, cells, "paper")
    assert not calls
    eager = run_grid(model, batches, cells, "paper", fused=False)
    assert not calls
    fused = run_grid(model, batches, cells, "paper")
    # per batch and cell: the masked layer's output plus every layer above it
    assert len(calls) == len(batches) * sum(N_LAYERS - cell.layer for cell in cells if cell.layer is not None)
    assert set(calls) == {torch.float32}
    assert_same_grid(eager, naive)
    assert_same_grid(fused, naive)
    calls.clear()
    with precision.autocast("bf16", "cpu"):
        run_grid(model, batches, cells, "paper")
    assert not calls


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_grid_equals_naive_grid_for_every_operator(arch):
    """zero/uniform edit the masked layer's probabilities after softmax: the fast grid's masked layer goes
    through the eager path (never fused), the layers above may be fused; fast == naive for every operator."""
    model = tiny_model(arch, seed=1)
    batches = make_batches(model.config, seed=1)
    cells = cells_of(N_LAYERS, N_HEADS, ("q2p", "p2q", "p2p", "all"), modes=("layer", "head", "from_layer"),
                     operators=("renorm", "zero", "uniform"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = run_grid(model, batches, cells, "paper", max_stack=3)
    assert_same_grid(fast, run_grid_naive(model, batches, cells, "paper"))
    for layer in range(N_LAYERS):  # the three operators are different interventions with the same removed mass
        renorm, zero, uniform = (fast[Cell("p2q", layer, operator=op)] for op in ("renorm", "zero", "uniform"))
        assert not np.allclose(zero.start_logits, renorm.start_logits)
        assert not np.allclose(uniform.start_logits, renorm.start_logits)
        np.testing.assert_allclose(zero.removed_mass, renorm.removed_mass, atol=1e-6)
        np.testing.assert_allclose(uniform.removed_mass, renorm.removed_mass, atol=1e-6)
    assert all(cell.zone != "all_paper_quirk" or cell.operator == "renorm"
               for cell in cells_of(N_LAYERS, N_HEADS, ALL_ZONE_OPTIONS, operators=("renorm", "zero")))
    with pytest.raises(MrcbenchError, match="no 'zero' operator"):
        Cell("all_paper_quirk", 0, operator="zero")


def with_null_keys(batches):
    """Each batch row's question id and window ordinal (as ablate adds them): one window per question."""
    for index, batch in enumerate(batches):
        batch["qid"] = [f"b{index}r{row}" for row in range(batch["input_ids"].shape[0])]
        batch["window"] = [0] * batch["input_ids"].shape[0]
    return batches


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_grid_equals_naive_grid_for_size_matched_nulls(arch):
    model = tiny_model(arch, seed=2)
    batches = with_null_keys(make_batches(model.config, seed=2))
    cells = cells_of(N_LAYERS, N_HEADS, ("q2q", "q2p", "p2q", "p2p", "all"), null_draws=2)
    null_cells = [cell for cell in cells if cell.null_zone is not None]
    assert {cell.zone for cell in null_cells} == {"null_q2q", "null_q2p", "null_p2q", "null_p2p"}
    assert len(null_cells) == 4 * 2 * N_LAYERS
    settings = NullSettings(tolerance=0.25, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = run_grid(model, batches, cells, "paper", max_stack=4, null=settings)
    naive = run_grid_naive(model, batches, cells, "paper", null=settings)
    assert_same_grid(fast, naive)
    for cell in null_cells:
        for name in ("null_target", "null_achieved", "null_feasible", "null_seed"):
            np.testing.assert_allclose(getattr(fast[cell], name), getattr(naive[cell], name), atol=1e-9,
                                       err_msg=f"{cell} {name}")
        out = fast[cell]
        zone = fast[Cell(cell.null_zone, cell.layer)]
        # the target is the zone's removed mass (head-averaged, unmasked model, same rows)
        np.testing.assert_allclose(out.null_target, zone.removed_mass, atol=1e-6, err_msg=str(cell))
        ok = out.null_feasible == 1
        assert np.all(np.abs(out.null_achieved[ok] / out.null_target[ok] - 1) <= settings.tolerance + 1e-9)
        assert (out.null_seed >= 0).all()
    draws = [fast[Cell("null_p2q", 1, null_draw=draw)].start_logits for draw in (0, 1)]
    assert not np.allclose(draws[0], draws[1])  # two draws are two different masks
    assert not np.allclose(draws[0], fast[BASELINE].start_logits)
    np.testing.assert_array_equal(fast[Cell("p2q", 1)].null_seed, -1)
    with pytest.raises(MrcbenchError, match="only mode 'layer'"):
        Cell("null_p2q", 1, mode="from_layer", null_draw=0)
    with pytest.raises(MrcbenchError, match="needs a draw"):
        Cell("null_p2q", 1)


def test_null_masks_match_the_zone_mass_from_outside_its_columns():
    """Per row: keys outside the zone's columns, never special or PAD; the mass within the tolerance or the
    row flagged; the draw is fixed by the seed and independent of the batch's padding."""
    from mrcbench.masking.nulls import null_masks

    zone_ids = torch.tensor([[SPECIAL, QUESTION, QUESTION, SPECIAL] + [PASSAGE] * 8 + [SPECIAL, PAD, PAD]])
    length = zone_ids.shape[1]
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand((1, length, length), generator=generator) * (zone_ids != PAD)[:, None, :]
    probs = probs / probs.sum(-1, keepdim=True)
    settings = NullSettings(tolerance=0.1, seed=3)
    masks = null_masks(zone_ids, probs, "p2q", "clean", 0, 0, ["q"], [0], settings)
    chosen = masks.blanked[0]
    assert chosen.any()
    assert not chosen[:, zone_ids[0] != PASSAGE].any()  # p2q's columns are the question; never specials/PAD
    assert not chosen[zone_ids[0] != PASSAGE].any()  # the zone's rows only (clean p2q: passage rows)
    target = (probs[0][:, 1:3]).sum(-1)[zone_ids[0] == PASSAGE]
    achieved = (probs[0] * chosen).sum(-1)[zone_ids[0] == PASSAGE]
    within = (achieved / target - 1).abs() <= settings.tolerance
    assert bool(masks.feasible[0]) == bool(within.all())
    assert masks.target[0] == pytest.approx(float(target.mean()))
    assert masks.achieved[0] == pytest.approx(float(achieved.mean()))
    # p2p from outside its columns: the question keys cannot supply most passage rows' mass
    p2p = null_masks(zone_ids, probs, "p2p", "clean", 0, 0, ["q"], [0], settings)
    assert not p2p.feasible[0] and p2p.achieved[0] < p2p.target[0] * (1 - settings.tolerance)
    assert p2p.blanked[0][zone_ids[0] == PASSAGE][:, 1:3].all()  # every candidate key taken
    # same seed, same draw; more padding changes nothing
    again = null_masks(zone_ids, probs, "p2q", "clean", 0, 0, ["q"], [0], settings)
    assert torch.equal(again.blanked, masks.blanked) and again.seeds[0] == masks.seeds[0]
    padded_ids = torch.cat([zone_ids, torch.full((1, 3), PAD)], 1)
    padded = torch.zeros((1, length + 3, length + 3))
    padded[:, :length, :length] = probs
    wide = null_masks(padded_ids, padded, "p2q", "clean", 0, 0, ["q"], [0], settings)
    assert torch.equal(wide.blanked[:, :length, :length], masks.blanked)
    other = null_masks(zone_ids, probs, "p2q", "clean", 0, 1, ["q"], [0], settings)
    assert other.seeds[0] != masks.seeds[0]


def test_ablate_writes_null_rows_with_mass_match_and_feasibility(tmp_path):
    from mrcbench.runtime import files

    model = tiny_model("bert")
    batches = make_batches(model.config)
    example_ids = ["q1", "q1", "q2", "q3", "q3"]
    features = eval_features(batches, example_ids)

    def decode(start_logits, end_logits):
        spans = {}
        for window, (qid, length) in enumerate(zip(example_ids, features.lengths, strict=True)):
            best = (window, int(start_logits[window, :length].argmax()), int(end_logits[window, :length].argmax()))
            spans.setdefault(qid, best)
        return Predictions(answers={qid: f"{s}-{e}" for qid, (_, s, e) in spans.items()}, best_span=spans)

    def score(answers):
        return pd.DataFrame({"qid": list(answers), "article": "A", "em": 1.0, "f1": 1.0})

    cells = [cell for cell in cells_of(N_LAYERS, N_HEADS, ("p2q", "q2q"), null_draws=1) if cell.layer in (None, 1)]
    keys = {"model": "tiny-bert", "train_set": "squad", "eval_set": "squad-dev", "seed": 7}
    settings = NullSettings(tolerance=0.2, seed=1)
    grid = {"batch_size": 32, "cells_per_pass": 16, "progress": False, "null": settings}
    frame = ablate(model, features, cells, "paper", decode, score, keys, **grid)
    naive = ablate(model, features, cells, "paper", decode, score, keys, **grid, fast=False)
    pd.testing.assert_frame_equal(frame, naive, atol=1e-5, check_exact=False)
    nulls = frame[frame.zone.str.startswith("null_")]
    assert set(nulls.zone) == {"null_p2q", "null_q2q"} and (nulls.null_draw == 0).all() and len(nulls) == 6
    others = frame[~frame.zone.str.startswith("null_")]
    assert others.mass_match.isna().all() and others.null_feasible.isna().all() and (others.null_draw == -1).all()
    assert nulls.null_feasible.notna().all() and (nulls.null_seed >= 0).all()
    feasible = nulls[nulls.null_feasible.astype(bool)]
    assert (abs(feasible.mass_match - 1) <= settings.tolerance + 1e-9).all()
    zone = frame[(frame.zone == "p2q")].set_index("qid").removed_mass
    null = nulls[nulls.zone == "null_p2q"].set_index("qid")
    np.testing.assert_allclose(null.removed_mass, (zone * null.mass_match)[null.index], rtol=1e-4)
    files.write_parquet(frame, tmp_path / "grid.parquet")
    back = pd.read_parquet(tmp_path / "grid.parquet")
    assert back.null_feasible.isna().sum() == len(others)


def test_a_null_that_cannot_be_drawn_in_any_window_runs_no_forward_pass(monkeypatch):
    """P2P's null is infeasible in every window of the tiny batches (the question keys of passage rows
    cannot hold P2P's mass): the fast and the naive grid record it without a masked pass; Q2Q's null runs."""
    model = tiny_model("bert")
    batches = with_null_keys(make_batches(model.config, seed=2))
    cells = [BASELINE, Cell("null_p2p", 1, null_draw=0), Cell("null_q2q", 1, null_draw=0)]
    settings = NullSettings(tolerance=0.2, seed=0)
    plans = []
    concat = MaskPlan.concat

    def counting(parts):
        plans.append(len(parts))
        return concat(parts)

    monkeypatch.setattr(MaskPlan, "concat", staticmethod(counting))
    fast = run_grid(model, batches, cells, "paper", null=settings)
    assert not fast[Cell("null_p2p", 1, null_draw=0)].null_feasible.any()
    assert fast[Cell("null_q2q", 1, null_draw=0)].null_feasible.all()
    assert len(plans) == len(batches)  # one masked replay per batch: Q2Q's null only
    baseline = fast[BASELINE]
    np.testing.assert_array_equal(fast[Cell("null_p2p", 1, null_draw=0)].start_logits, baseline.start_logits)
    applied = []
    apply_plan = ZoneAttention.apply_plan

    def counting_apply(self, plan):
        applied.append(plan)
        return apply_plan(self, plan)

    monkeypatch.setattr(ZoneAttention, "apply_plan", counting_apply)
    naive = run_grid_naive(model, batches, cells, "paper", null=settings)
    assert len(applied) == len(batches)
    assert_same_grid(fast, naive)


def test_null_refill_skips_a_heavy_key_that_would_overshoot():
    """A passage row puts 0.1 on the question (its p2q mass) and 0.5 on one passage key: whatever the shuffle,
    the null never takes that key (it alone overshoots the tolerance) and matches with the small keys."""
    from mrcbench.masking.nulls import null_masks

    zone_ids = torch.tensor([[SPECIAL, QUESTION, QUESTION, SPECIAL] + [PASSAGE] * 12 + [SPECIAL]])
    length = zone_ids.shape[1]
    row = torch.zeros(length)
    row[[1, 2]] = 0.05  # p2q mass 0.1
    row[4] = 0.5  # one heavy passage key
    row[5:16] = 0.3 / 11 * torch.linspace(0.5, 1.5, 11) / torch.linspace(0.5, 1.5, 11).mean()  # small keys
    row[[0, 3, 16]] = (1 - row.sum()) / 3
    probs = row.expand(1, length, length).clone()
    for seed in range(20):
        masks = null_masks(zone_ids, probs, "p2q", "clean", 0, 0, ["q"], [0], NullSettings(0.2, seed))
        assert not masks.blanked[0][:, 4].any() and bool(masks.feasible[0])
        achieved = (probs[0] * masks.blanked[0]).sum(-1)[4:16]
        assert ((achieved / 0.1 - 1).abs() <= 0.2 + 1e-6).all()
