"""Tiny models and feature batches the grid and precision tests share, and the one-thread fixture
they run under (float sums then do not depend on how many cores the machine has)."""
import pytest
import torch

from mrcbench.zones import PAD, PASSAGE, QUESTION, SPECIAL

from support.tiny_models import architectures

N_LAYERS, N_HEADS = 3, 4
ARCHS = architectures(N_LAYERS, N_HEADS, albert_groups=True)


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model_class, make_config = ARCHS[arch]
    model = model_class(make_config()).eval()
    model.set_attn_implementation("eager")  # the reference the "mrcbench" attention is bit-identical to
    return model


def make_batches(config, seed: int = 0):
    """Two dynamically padded batches of [CLS] q [SEP] p [SEP] PAD features (as EvalFeatures.batches)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for layouts in (((3, 8, 2), (2, 11, 0)), ((4, 5, 3), (2, 4, 6), (3, 9, 0))):
        rows, zones, types = [], [], []
        for question, passage, pad in layouts:
            ids = torch.randint(5, config.vocab_size, (question + passage,), generator=generator).tolist()
            rows.append([3, *ids[:question], 4, *ids[question:], 4] + [config.pad_token_id or 0] * pad)
            zones.append([SPECIAL] + [QUESTION] * question + [SPECIAL] + [PASSAGE] * passage + [SPECIAL] + [PAD] * pad)
            types.append([0] * (question + 2) + [1] * (passage + 1) + [0] * pad)
        zone_ids = torch.tensor(zones)
        batch = {"input_ids": torch.tensor(rows), "attention_mask": (zone_ids != PAD).long(), "zone_ids": zone_ids}
        if getattr(config, "type_vocab_size", 0) > 1:
            batch["token_type_ids"] = torch.tensor(types)
        batches.append(batch)
    return batches


@pytest.fixture(autouse=True)
def _one_thread():
    """Autouse where imported: torch on one thread for the test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


