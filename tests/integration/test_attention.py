"""Zone masking and statistics ("mrcbench" attention function, DeBERTa/MPNet adapter) on tiny random QA models
of every supported family."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AlbertConfig, AlbertForQuestionAnswering

from mrcbench.errors import MrcbenchError
from mrcbench.families import FAMILIES
from mrcbench.grid.zone_stats import collect_zone_stats, zone_stats_frame
from mrcbench.masking.controller import ZoneAttention
from mrcbench.masking.plan import blanked_cells
from mrcbench.zones import ALL_ZONE_OPTIONS, PAD, PASSAGE, QUESTION, SPECIAL

from support.tiny_models import architectures, common_config

N_LAYERS, N_HEADS = 4, 4
COMMON = common_config(N_LAYERS, N_HEADS)
ARCHS = architectures(N_LAYERS, N_HEADS)


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model_class, make_config = ARCHS[arch]
    model = model_class(make_config()).eval()
    model.set_attn_implementation("eager")
    return model


def make_batch(config, layouts=((3, 8, 2), (2, 11, 0), (4, 4, 5)), seed: int = 1):
    """[CLS] q×m [SEP] p×n [SEP] PAD×k per row, random ids; zone ids as features.py builds them."""
    generator = torch.Generator().manual_seed(seed)
    cls_id, sep_id, pad_id = 3, 4, config.pad_token_id or 0
    rows, zones, types = [], [], []
    for question, passage, pad in layouts:
        ids = torch.randint(5, config.vocab_size, (question + passage,), generator=generator).tolist()
        rows.append([cls_id, *ids[:question], sep_id, *ids[question:], sep_id] + [pad_id] * pad)
        zones.append([SPECIAL] + [QUESTION] * question + [SPECIAL] + [PASSAGE] * passage + [SPECIAL] + [PAD] * pad)
        types.append([0] * (question + 2) + [1] * (passage + 1) + [0] * pad)
    zone_ids = torch.tensor(zones)
    batch = {
        "input_ids": torch.tensor(rows),
        "attention_mask": (zone_ids != PAD).long(),
        "zone_ids": zone_ids,
    }
    if getattr(config, "type_vocab_size", 0) > 1:
        batch["token_type_ids"] = torch.tensor(types)
    return batch


def inputs(batch):
    return {key: value for key, value in batch.items() if key != "zone_ids"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", ARCHS)
def test_without_intervention_bit_identical_to_eager(arch):
    eager = tiny_model(arch)
    model = copy.deepcopy(eager)
    batch = make_batch(model.config)
    expected = eager(**inputs(batch), output_hidden_states=True)
    adapted = FAMILIES[model.config.model_type].adapter is not None
    with ZoneAttention(model) as controller:
        assert model.config._attn_implementation == ("eager" if adapted else "mrcbench")
        plain = model(**inputs(batch), output_hidden_states=True)
        with controller.record_stats(batch["zone_ids"], maps_for=[0]):
            recorded = model(**inputs(batch))
    assert model.config._attn_implementation == "eager"  # restored by close()
    for outputs in (plain, recorded):
        assert torch.equal(outputs.start_logits, expected.start_logits)
        assert torch.equal(outputs.end_logits, expected.end_logits)
    for ours, theirs in zip(plain.hidden_states, expected.hidden_states, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["paper", "clean"])
def test_masking_changes_exactly_the_blanked_cells_and_rows_renormalise(arch, variant):
    model = tiny_model(arch)
    batch = make_batch(model.config)
    zone_ids = batch["zone_ids"]
    layer = 1  # ModernBERT: a local (sliding-window) layer
    real_rows = (zone_ids != PAD)[:, None, :, None]
    pad_columns = (zone_ids == PAD)[:, None, None, :]
    diagonal = torch.eye(zone_ids.shape[1], dtype=torch.bool)
    spared_rows = 0
    with ZoneAttention(model) as controller:
        baseline = model(**inputs(batch), output_attentions=True).attentions
        allowed = baseline[layer] > 0  # the model's own mask: padding, and ModernBERT's window
        rows = real_rows.expand_as(allowed)
        for zone in ALL_ZONE_OPTIONS:
            with controller.intervene(zone_ids, zone, layers=layer, variant=variant):
                attentions = model(**inputs(batch), output_attentions=True).attentions
            probs = attentions[layer]
            assert torch.equal(attentions[0], baseline[0])  # layers below are untouched
            # no real-token row is ever fully blanked: each still distributes exactly 1
            torch.testing.assert_close(probs.sum(-1)[rows[..., 0]], torch.ones(int(rows[..., 0].sum())), atol=1e-6,
                                       rtol=0)
            if zone == "all_paper_quirk":  # padding leakage: real tokens attend to PAD keys (inside the window)
                distance = (torch.arange(zone_ids.shape[1])[:, None] - torch.arange(zone_ids.shape[1])).abs()
                reachable = torch.ones_like(distance, dtype=torch.bool)
                if arch == "modernbert":  # its layer 1 is a local layer
                    reachable = distance <= model.config.sliding_window
                leaking = (pad_columns & real_rows & reachable).expand_as(probs)
                assert leaking.any() and (probs[leaking] > 0).all()
                assert (probs[(pad_columns & real_rows & ~reachable).expand_as(probs)] == 0).all()
                continue
            blanked = blanked_cells(zone_ids, zone, variant)[:, None].expand_as(probs)
            starved = ~(allowed & ~blanked).any(-1, keepdim=True) & real_rows  # only inside a sliding window
            spared_rows += int(starved.sum())
            intended = blanked & ~(starved & diagonal)
            kept = allowed & ~intended
            assert (probs[intended & rows] == 0).all(), zone
            assert (probs[~allowed & rows] == 0).all(), zone  # padding (and the window) stay masked
            # every other cell keeps its score: the baseline row renormalised over the kept keys
            expected = baseline[layer] * kept / (baseline[layer] * kept).sum(-1, keepdim=True)
            torch.testing.assert_close(probs[rows], expected[rows], atol=1e-6, rtol=1e-5)
            if intended[rows].any():
                assert not torch.equal(probs, baseline[layer])
    assert (spared_rows > 0) == (arch == "modernbert")  # p2p/all starve rows far from any special token


@pytest.mark.parametrize("arch", ARCHS)
def test_masking_layer_keeps_hidden_states_below_and_changes_its_own(arch):
    model = tiny_model(arch)
    batch = make_batch(model.config)
    with ZoneAttention(model) as controller:
        baseline = model(**inputs(batch), output_hidden_states=True).hidden_states
        for layer in range(N_LAYERS):
            with controller.intervene(batch["zone_ids"], "p2q", layers=layer):
                masked = model(**inputs(batch), output_hidden_states=True).hidden_states
            # hidden_states[0] = embeddings, hidden_states[i + 1] = output of layer i
            for index in range(layer + 1):
                assert torch.equal(masked[index], baseline[index]), (layer, index)
            assert not torch.allclose(masked[layer + 1], baseline[layer + 1]), layer


@pytest.mark.parametrize("groups", [1, 2])
def test_albert_counts_the_shared_layer_per_call(groups):
    torch.manual_seed(0)
    model = AlbertForQuestionAnswering(AlbertConfig(**COMMON, embedding_size=16, num_hidden_groups=groups)).eval()
    batch = make_batch(model.config)
    with ZoneAttention(model) as controller:
        baseline = model(**inputs(batch), output_attentions=True)
        logits = {}
        for layer in (1, 2):
            with controller.intervene(batch["zone_ids"], "p2p", layers=layer):
                outputs = model(**inputs(batch), output_attentions=True)
            logits[layer] = outputs.start_logits
            for index in range(N_LAYERS):
                same = torch.equal(outputs.attentions[index], baseline.attentions[index])
                assert same == (index < layer), (layer, index)
    assert not torch.allclose(logits[1], logits[2])


@pytest.mark.parametrize("arch", ["bert", "albert", "modernbert", "deberta-v2"])
def test_head_mode_masks_only_the_selected_head(arch):
    model = tiny_model(arch)
    batch = make_batch(model.config)
    layer, head = 2, 1
    with ZoneAttention(model) as controller:
        baseline = model(**inputs(batch), output_attentions=True).attentions[layer]
        with controller.intervene(batch["zone_ids"], "p2p", layers=layer, heads=head):
            probs = model(**inputs(batch), output_attentions=True).attentions[layer]
    blanked = blanked_cells(batch["zone_ids"], "p2p", "paper")
    assert (probs[:, head][blanked] == 0).all()
    assert not torch.equal(probs[:, head], baseline[:, head])
    others = [h for h in range(N_HEADS) if h != head]
    assert torch.equal(probs[:, others], baseline[:, others])


@pytest.mark.parametrize("arch", ["bert", "albert", "modernbert", "deberta-v2"])
def test_from_layer_masks_every_layer_upward(arch):
    model = tiny_model(arch)
    batch = make_batch(model.config)
    blanked = blanked_cells(batch["zone_ids"], "q2p", "clean")[:, None]
    with (
        ZoneAttention(model) as controller,
        controller.intervene(batch["zone_ids"], "q2p", layers=range(1, N_LAYERS), variant="clean") as result,
    ):
        attentions = model(**inputs(batch), output_attentions=True).attentions
    for layer in range(1, N_LAYERS):
        assert (attentions[layer][blanked.expand_as(attentions[layer])] == 0).all()
    assert np.isnan(result.removed_mass[:, 0]).all()
    assert not np.isnan(result.removed_mass[:, 1:]).any()


def reference_zone_mass(probs: np.ndarray, zone_ids: np.ndarray) -> np.ndarray:
    """Row-by-row reference: [B, H, T, T] probabilities -> [B, H, 3, 3] zone masses."""
    order = (QUESTION, PASSAGE, SPECIAL)
    batch, heads = probs.shape[:2]
    mass = np.full((batch, heads, 3, 3), np.nan)
    for b in range(batch):
        for h in range(heads):
            for r, row_zone in enumerate(order):
                rows = [i for i in range(zone_ids.shape[1]) if zone_ids[b, i] == row_zone]
                for c, col_zone in enumerate(order):
                    cols = [j for j in range(zone_ids.shape[1]) if zone_ids[b, j] == col_zone]
                    if rows:
                        mass[b, h, r, c] = np.mean([probs[b, h, i, cols].sum() for i in rows])
    return mass


@pytest.mark.parametrize("arch", ARCHS)
def test_zone_stats_agree_with_eager_output_attentions(arch):
    eager = tiny_model(arch)
    model = copy.deepcopy(eager)
    batch = make_batch(model.config)
    attentions = eager(**inputs(batch), output_attentions=True).attentions
    with ZoneAttention(model) as controller, controller.record_stats(batch["zone_ids"], maps_for=[2]) as stats:
        model(**inputs(batch))
    zone_ids = batch["zone_ids"].numpy()
    assert stats.mass.shape == (3, N_LAYERS, N_HEADS, 3, 3)
    for layer, probs in enumerate(attentions):
        expected = reference_zone_mass(probs.numpy(), zone_ids)
        np.testing.assert_allclose(stats.mass[:, layer], expected, atol=1e-6)
    real = np.flatnonzero(zone_ids[2] != PAD)
    expected_map = torch.stack(attentions)[:, 2].numpy()[:, :, real][:, :, :, real]
    np.testing.assert_array_equal(stats.maps[2], expected_map)
    # rows distribute all their mass over question, passage and special keys
    np.testing.assert_allclose(stats.mass.sum(-1), 1.0, atol=1e-5)


def test_zone_stats_change_with_the_input():
    model = tiny_model("bert")
    first, second = make_batch(model.config, seed=1), make_batch(model.config, seed=2)
    with ZoneAttention(model) as controller:
        with controller.record_stats(first["zone_ids"]) as stats_first:
            model(**inputs(first))
        with controller.record_stats(second["zone_ids"]) as stats_second:
            model(**inputs(second))
    assert np.isfinite(stats_first.mass).all()
    assert np.abs(stats_first.mass - stats_second.mass).max() > 1e-3


def test_zone_stats_under_intervention_see_the_masked_model():
    model = tiny_model("bert")
    batch = make_batch(model.config)
    with (
        ZoneAttention(model) as controller,
        controller.intervene(batch["zone_ids"], "p2q", layers=2, variant="clean"),
        controller.record_stats(batch["zone_ids"]) as stats,
    ):
        model(**inputs(batch))
    passage, question = 1, 0
    assert (stats.mass[:, 2, :, passage, question] == 0).all()
    assert (stats.mass[:, 1, :, passage, question] > 0).all()


@pytest.mark.parametrize("arch", ["bert", "albert", "distilbert", "deberta-v3", "mpnet"])
@pytest.mark.parametrize(("zone", "variant"), [("p2q", "paper"), ("q2p", "clean"), ("all", "paper")])
def test_removed_mass_is_the_blanked_mass_of_the_unmasked_model(arch, zone, variant):
    model = tiny_model(arch)
    batch = make_batch(model.config)
    layer = 2
    with ZoneAttention(model) as controller:
        probs = model(**inputs(batch), output_attentions=True).attentions[layer].numpy()
        with controller.intervene(batch["zone_ids"], zone, layers=layer, variant=variant) as result:
            model(**inputs(batch))
    blanked = blanked_cells(batch["zone_ids"], zone, variant).numpy()
    real = batch["zone_ids"].numpy() != PAD
    for b in range(probs.shape[0]):
        rows = [i for i in range(blanked.shape[1]) if blanked[b, i].any() and real[b, i]]
        expected = np.mean([[probs[b, h, i, blanked[b, i]].sum() for i in rows] for h in range(N_HEADS)])
        assert result.removed_mass[b, layer] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(np.delete(result.removed_mass, layer, axis=1)).all()
    np.testing.assert_array_equal(result.first_masked_layer_mass(), result.removed_mass[:, layer])


def test_paper_quirk_removes_no_mass():
    model = tiny_model("bert")
    batch = make_batch(model.config)
    with (
        ZoneAttention(model) as controller,
        controller.intervene(batch["zone_ids"], "all_paper_quirk", layers=0) as result,
    ):
        model(**inputs(batch))
    assert np.isnan(result.removed_mass).all()


def test_misuse_raises_one_line_errors():
    model = tiny_model("bert")
    batch = make_batch(model.config)
    with ZoneAttention(model) as controller:
        with (
            pytest.raises(MrcbenchError, match="pass the current batch's zone_ids"),
            controller.intervene(batch["zone_ids"][:2], "p2q", layers=0),
        ):
            model(**inputs(batch))
        with pytest.raises(MrcbenchError, match="layer index 4 out of range"):
            controller.intervene(batch["zone_ids"], "p2q", layers=4).__enter__()
        with pytest.raises(MrcbenchError, match="head index 7 out of range"):
            controller.intervene(batch["zone_ids"], "p2q", layers=0, heads=[7]).__enter__()
        with (
            pytest.raises(MrcbenchError, match="do not nest"),
            controller.intervene(batch["zone_ids"], "p2q", layers=0),
            controller.intervene(batch["zone_ids"], "q2p", layers=0),
        ):
            pass
        with pytest.raises(MrcbenchError, match="already has a ZoneAttention"):
            ZoneAttention(model)
        no_specials = torch.full_like(batch["zone_ids"], PASSAGE)
        with pytest.raises(MrcbenchError, match="no key to attend to"):
            controller.intervene(no_specials, "p2p", layers=0).__enter__()
        # after errors the controller is usable again and still exact
        plain = model(**inputs(batch)).start_logits
    assert torch.equal(plain, model(**inputs(batch)).start_logits)


def test_zone_stats_frame_averages_windows_per_question():
    rng = np.random.default_rng(0)
    mass = rng.random((3, 2, 2, 3, 3))
    mass[1, 0, 0, 0, :] = np.nan  # second window of q1 has no question rows in this cell
    keys = {"model": "bert", "train_set": "squad", "eval_set": "squad-dev", "seed": 1}
    frame = zone_stats_frame(mass, ["q1", "q1", "q2"], keys, articles={"q1": "A", "q2": "B"})
    assert list(frame.columns) == [
        "model", "train_set", "eval_set", "seed", "qid", "article", "layer", "head", "row_zone", "col_zone", "mass",
    ]
    assert len(frame) == 2 * 2 * 2 * 9
    q1 = frame[(frame.qid == "q1") & (frame.layer == 1) & (frame["head"] == 0)]
    cell = q1[(q1.row_zone == "passage") & (q1.col_zone == "special")]
    assert cell.mass.item() == pytest.approx((mass[0, 1, 0, 1, 2] + mass[1, 1, 0, 1, 2]) / 2)
    skipped = frame[(frame.qid == "q1") & (frame.layer == 0) & (frame["head"] == 0) & (frame.row_zone == "question")]
    np.testing.assert_allclose(skipped.mass, mass[0, 0, 0, 0, :])
    assert set(frame.article) == {"A", "B"}
    assert frame["seed"].astype(int).eq(1).all()
    assert pd.api.types.is_float_dtype(frame.mass)
    with pytest.raises(MrcbenchError, match="expected \\[2, layers"):
        zone_stats_frame(mass, ["q1", "q2"], keys)


def test_collect_zone_stats_over_batches_with_case_studies():
    model = tiny_model("albert")
    batches = [make_batch(model.config, seed=1), make_batch(model.config, layouts=((2, 6, 0), (5, 3, 0)), seed=2)]
    result = collect_zone_stats(model, batches, case_study_features=[1, 4])
    assert result.mass.shape == (5, N_LAYERS, N_HEADS, 3, 3)
    assert model.config._attn_implementation == "eager"  # the temporary controller is closed
    with ZoneAttention(model) as controller, controller.record_stats(batches[1]["zone_ids"], maps_for=[1]) as stats:
        model(**inputs(batches[1]))
    np.testing.assert_array_equal(result.mass[3:], stats.mass)
    np.testing.assert_array_equal(result.maps[4], stats.maps[1])
    assert result.maps[1].shape == (N_LAYERS, N_HEADS, 16, 16)  # row 1 of batch 0 has no padding
    with pytest.raises(MrcbenchError, match="beyond the 5 features"):
        collect_zone_stats(model, batches, case_study_features=[5])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("operator", ["zero", "uniform"])
def test_post_softmax_operators_change_exactly_the_zone_cells(arch, operator):
    """zero: the zone's cells become 0, the rest keep their unmasked probability (rows sum to 1 minus the
    zone mass); uniform: each row's zone mass is spread evenly over its attendable zone keys (rows sum to 1)."""
    model = tiny_model(arch)
    batch = make_batch(model.config)
    zone_ids = batch["zone_ids"]
    layer = 1  # ModernBERT: a local (sliding-window) layer
    rows = (zone_ids != PAD)[:, None, :].expand(-1, N_HEADS, -1)
    with ZoneAttention(model) as controller:
        baseline = model(**inputs(batch), output_attentions=True).attentions
        allowed = baseline[layer] > 0
        changed = 0
        for zone in ("q2q", "q2p", "p2q", "p2p", "all"):
            with controller.intervene(zone_ids, zone, layers=layer, variant="paper", operator=operator) as result:
                outputs = model(**inputs(batch), output_attentions=True)
            probs, before = outputs.attentions[layer], baseline[layer]
            assert torch.equal(outputs.attentions[0], baseline[0])
            blanked = blanked_cells(zone_ids, zone, "paper")[:, None].expand_as(probs)
            # a row whose every attendable key is in the zone keeps its diagonal (ModernBERT's window), as renorm
            starved = ~(allowed & ~blanked).any(-1, keepdim=True)
            cells = blanked & allowed & ~(starved & torch.eye(zone_ids.shape[1], dtype=torch.bool))
            cells = cells & rows[..., None]  # PAD rows (never read) are left out of the comparison
            mass = (before * cells).sum(-1)
            real = rows[..., None].expand_as(probs)
            assert (probs[~cells & real] == before[~cells & real]).all(), zone  # every other cell untouched
            if operator == "zero":
                assert (probs[cells] == 0).all()
                torch.testing.assert_close(probs.sum(-1)[rows], (1 - mass)[rows], atol=1e-6, rtol=0)
            else:
                count = cells.sum(-1, keepdim=True).clamp(min=1)
                expected = torch.where(cells, (mass[..., None] / count).expand_as(probs), before)
                torch.testing.assert_close(probs[real], expected[real], atol=1e-7, rtol=0)
                torch.testing.assert_close(probs.sum(-1)[rows], torch.ones(int(rows.sum())), atol=1e-6, rtol=0)
            changed += int(not torch.equal(outputs.start_logits, baseline_logits(model, batch)))
            # removed mass is the operator-independent unmasked zone mass, as for renorm
            blank_rows = (blanked & ~(starved & torch.eye(zone_ids.shape[1], dtype=torch.bool))).any(-1) & rows
            np.testing.assert_allclose(
                result.removed_mass[:, layer],
                ((mass * blank_rows).sum((1, 2)) / blank_rows.sum((1, 2))).numpy(), rtol=1e-5,
            )
    assert changed == 5


def baseline_logits(model, batch):
    return model(**inputs(batch)).start_logits


def test_post_softmax_operators_refuse_the_paper_quirk():
    model = tiny_model("bert")
    batch = make_batch(model.config)
    with (
        ZoneAttention(model) as controller,
        pytest.raises(MrcbenchError, match="all_paper_quirk"),
        controller.intervene(batch["zone_ids"], "all_paper_quirk", layers=0, operator="zero"),
    ):
        pass
    with (
        ZoneAttention(model) as controller,
        pytest.raises(MrcbenchError, match="unknown ablation operator"),
        controller.intervene(batch["zone_ids"], "p2q", layers=0, operator="mean"),
    ):
        pass
