"""The pieces of zone masking without a model: the mask plan, the operators, the recorders and the two
hook points, on hand-made tensors with known answers."""
import numpy as np
import pytest
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.masking.hooks import ZoneHooks
from mrcbench.masking.operators import allowed_cells, apply_operator, edit_mask
from mrcbench.masking.plan import MaskPlan
from mrcbench.masking.recorders import (
    MeanProbsRecorder,
    RemovedMassMeter,
    ZoneStatsRecorder,
    removed_mass,
    zone_mass_from_probs,
)
from mrcbench.zones import PAD, PASSAGE, QUESTION, SPECIAL

MIN = torch.finfo(torch.float32).min

# one batch row, one head, three tokens: each row sums to 1
PROBS = torch.tensor([[[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]])
# row 0 loses key 2, row 1 keys 1 and 2, row 2 nothing
CELLS = torch.tensor([[[[False, False, True], [False, True, True], [False, False, False]]]])


def test_zero_sets_the_cells_to_zero_and_leaves_the_rest():
    expected = torch.tensor([[[[0.5, 0.3, 0.0], [0.1, 0.0, 0.0], [0.2, 0.2, 0.6]]]])
    assert torch.equal(apply_operator(PROBS, CELLS, "zero"), expected)


def test_uniform_spreads_each_rows_cell_mass_evenly_over_its_cells():
    expected = torch.tensor([[[[0.5, 0.3, 0.2], [0.1, 0.45, 0.45], [0.2, 0.2, 0.6]]]])
    result = apply_operator(PROBS, CELLS, "uniform")
    torch.testing.assert_close(result, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(result.sum(-1), torch.ones(1, 1, 3), atol=1e-7, rtol=0)
    assert result.dtype == PROBS.dtype


def test_renorm_is_not_an_operator_after_softmax():
    with pytest.raises(MrcbenchError, match="before softmax"):
        apply_operator(PROBS, CELLS, "renorm")
    with pytest.raises(MrcbenchError, match="unknown ablation operator"):
        apply_operator(PROBS, CELLS, "mean")


def test_edit_mask_sets_the_blanked_cells_to_the_dtype_minimum():
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PASSAGE, PAD]])
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 3] = MIN  # the padding key
    blank = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    blank[0, 0, 2, 1] = True  # the passage row's question key
    edited, applied = edit_mask(mask, blank, torch.zeros(1, 1, dtype=torch.bool), zone_ids, mask, None)
    expected = mask.clone()
    expected[0, 0, 2, 1] = MIN
    assert torch.equal(edited, expected) and torch.equal(applied, blank)
    # without a padding mask (transformers skipped it) only the blanked cell is masked
    edited, _ = edit_mask(None, blank, torch.zeros(1, 1, dtype=torch.bool), zone_ids, mask, None)
    assert torch.equal(edited, torch.where(blank, torch.tensor(MIN), torch.zeros(())))


def test_edit_mask_keeps_the_diagonal_of_a_row_left_without_keys_and_edits_a_keep_mask():
    zone_ids = torch.tensor([[QUESTION, QUESTION]])
    blank = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    keep = torch.ones(1, 1, 2, 2, dtype=torch.long)  # DeBERTa's mask: nonzero = attendable
    edited, applied = edit_mask(keep, blank, torch.zeros(1, 1, dtype=torch.bool), zone_ids, keep, None)
    diagonal = torch.eye(2, dtype=torch.bool)
    assert torch.equal(applied[0, 0], ~diagonal)
    assert torch.equal(edited[0, 0], diagonal)


def test_edit_mask_lifts_padding_only_inside_the_window():
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PAD]])
    mask = torch.zeros(1, 1, 3, 3)
    mask[..., 2] = MIN
    mask[..., 2, :] = MIN
    lift = torch.ones(1, 1, dtype=torch.bool)
    nothing = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    edited, _ = edit_mask(mask, nothing, lift, zone_ids, mask, None)
    assert torch.equal(edited, torch.zeros(1, 1, 3, 3))
    window = (torch.arange(3)[:, None] - torch.arange(3)).abs() <= 1  # token 0 cannot reach token 2
    edited, _ = edit_mask(mask, nothing, lift, zone_ids, mask, window)
    assert edited[0, 0, 0, 2] == MIN and edited[0, 0, 2, 0] == MIN and edited[0, 0, 1, 2] == 0


def test_allowed_cells_of_each_mask_kind():
    additive = torch.tensor([[[[0.0, MIN]]]])
    assert torch.equal(allowed_cells(additive, additive), torch.tensor([[[[True, False]]]]))
    assert torch.equal(allowed_cells(torch.tensor([[[[1, 0]]]]), additive), torch.tensor([[[[True, False]]]]))
    assert bool(allowed_cells(None, additive))


def test_removed_mass_averages_the_blanked_rows_and_skips_padding():
    zone_ids = torch.tensor([[QUESTION, PASSAGE, PASSAGE]])
    assert removed_mass(PROBS, CELLS, zone_ids).tolist() == pytest.approx([(0.2 + 0.9) / 2])
    padded = torch.tensor([[QUESTION, PASSAGE, PAD]])
    with_pad_row = CELLS.clone()
    with_pad_row[0, 0, 2, 0] = True  # a PAD row's cell never counts
    assert removed_mass(PROBS, with_pad_row, padded).tolist() == pytest.approx([(0.2 + 0.9) / 2])


def test_zone_statistics_of_a_hand_made_map():
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PASSAGE]])
    mass = zone_mass_from_probs(PROBS, zone_ids)  # [B, H, row zone, col zone], (question, passage, special)
    expected = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.3, 0.2, 0.5]])
    torch.testing.assert_close(mass[0, 0], expected, atol=1e-7, rtol=0)
    no_passage = zone_mass_from_probs(PROBS, torch.tensor([[SPECIAL, QUESTION, QUESTION]]))
    assert torch.isnan(no_passage[0, 0, 1]).all()  # no passage row: NaN, never 0


def test_recorders_keep_what_they_are_asked_for():
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PAD]])
    stats = ZoneStatsRecorder(zone_ids, n_layers=2, n_heads=1, maps_for=[0])
    stats.add(1, PROBS)
    with pytest.raises(MrcbenchError, match="not every layer"):
        stats.result()
    stats.add(0, PROBS)
    result = stats.result()
    assert result.mass.shape == (1, 2, 1, 3, 3) and result.maps[0].shape == (2, 1, 2, 2)  # cropped to 2 tokens
    mean = MeanProbsRecorder([1])
    mean.add(0, PROBS)
    mean.add(1, torch.cat([PROBS, 1 - PROBS], dim=1))
    assert set(mean.probs) == {1}
    torch.testing.assert_close(mean.probs[1], torch.full((1, 3, 3), 0.5))
    meter = RemovedMassMeter(batch=1, n_layers=2)
    meter.add(1, PROBS, CELLS, torch.tensor([[QUESTION, PASSAGE, PASSAGE]]))
    assert np.isnan(meter.result()[0, 0]) and meter.result()[0, 1] == pytest.approx(0.55)


def _plan(operator: str, layers=1) -> MaskPlan:
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PASSAGE]])
    return MaskPlan.build(zone_ids, "p2q", "clean", layers, None, 2, 1, operator)


def test_the_mask_plan_selects_layers_and_heads_and_stacks():
    plan = _plan("renorm")
    assert plan.for_layer(0) is None
    blank, lift = plan.for_layer(1)
    assert blank.shape == (1, 1, 3, 3) and blank[0, 0, 2, 1] and int(blank.sum()) == 1 and not lift.any()
    zone_ids = torch.tensor([[SPECIAL, QUESTION, PASSAGE]])
    one_head = MaskPlan.build(zone_ids, "p2q", "clean", [0, 1], 1, 2, 2, "renorm")
    both = MaskPlan.concat([plan, one_head])
    assert both.heads.tolist() == [[True, True], [False, True]]
    assert both.layers.tolist() == [[False, True], [True, True]]
    with pytest.raises(MrcbenchError, match="different operators"):
        MaskPlan.concat([plan, _plan("zero")])
    with pytest.raises(MrcbenchError, match="no key to attend to"):
        MaskPlan.build(torch.tensor([[PASSAGE, PASSAGE]]), "p2p", "paper", 0, None, 1, 1, "renorm")
    with pytest.raises(MrcbenchError, match="exists only for the renorm operator"):
        MaskPlan.build(zone_ids, "all_paper_quirk", "paper", 0, None, 1, 1, "zero")


def _hooks(plan: MaskPlan) -> ZoneHooks:
    hooks = ZoneHooks(n_layers=2)
    hooks.plan, hooks.meter = plan, RemovedMassMeter(1, 2)
    return hooks


def test_hook_points_with_renorm_edit_the_mask_and_meter_the_reference():
    hooks = _hooks(_plan("renorm"))
    mask = torch.zeros(1, 1, 3, 3)
    assert hooks.hook_scores(0, mask, PROBS, 3, None) is None  # layer 0 is not masked
    edit = hooks.hook_scores(1, mask, PROBS, 3, None)
    assert edit.needs_reference and not edit.after_softmax
    assert edit.mask[0, 0, 2, 1] == MIN and int((edit.mask == MIN).sum()) == 1
    hooks.hook_pattern(1, PROBS, edit, reference=True)  # the unmasked probabilities: metered only
    assert hooks.meter.result()[0, 1] == pytest.approx(0.2)  # the passage row's mass on the question key
    assert hooks.hook_pattern(1, PROBS, edit) is PROBS  # after softmax a renorm edit changes nothing


def test_hook_points_with_a_post_softmax_operator_edit_the_probabilities():
    hooks = _hooks(_plan("zero"))
    hooks.stats = ZoneStatsRecorder(torch.tensor([[SPECIAL, QUESTION, PASSAGE]]), 2, 1, ())
    edit = hooks.hook_scores(1, torch.zeros(1, 1, 3, 3), PROBS, 3, None)
    assert edit.after_softmax and not edit.needs_reference
    probs = hooks.hook_pattern(1, PROBS, edit)
    assert probs[0, 0, 2, 1] == 0 and torch.equal(probs[0, 0, :2], PROBS[0, 0, :2])
    assert hooks.meter.result()[0, 1] == pytest.approx(0.2)
    assert hooks.stats.mass[0, 1, 0, 1, 0] == 0  # the statistics see the edited probabilities (passage -> question)


def test_hook_points_refuse_zone_ids_of_another_batch_and_count_layers():
    hooks = _hooks(_plan("renorm"))
    with pytest.raises(MrcbenchError, match="pass the current batch's zone_ids"):
        hooks.hook_scores(1, None, torch.zeros(2, 1, 3, 3), 3, None)
    counter = ZoneHooks(n_layers=2)
    layer = torch.nn.Identity()
    assert [counter.take_layer(layer), counter.take_layer(layer)] == [0, 1]
    counter.check_layer_count("m")
    with pytest.raises(MrcbenchError, match="exceeds the model's 2 layers"):
        counter.take_layer(layer)
    counter.next_layer = 1
    with pytest.raises(MrcbenchError, match="made 1 attention calls"):
        counter.check_layer_count("m")
