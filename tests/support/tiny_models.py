"""Tiny randomly initialised QA models of every supported encoder family (no download needed)."""
from transformers import (
    AlbertConfig,
    AlbertForQuestionAnswering,
    BertConfig,
    BertForQuestionAnswering,
    DebertaV2Config,
    DebertaV2ForQuestionAnswering,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    ElectraConfig,
    ElectraForQuestionAnswering,
    ModernBertConfig,
    ModernBertForQuestionAnswering,
    MPNetConfig,
    MPNetForQuestionAnswering,
    RobertaConfig,
    RobertaForQuestionAnswering,
    XLMRobertaConfig,
    XLMRobertaForQuestionAnswering,
)


def common_config(n_layers: int, n_heads: int) -> dict:
    """Config values shared by every family: hidden 32, vocabulary 100, 64 positions."""
    return {
        "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
        "intermediate_size": 64, "max_position_embeddings": 64, "initializer_range": 0.2,
    }


def architectures(n_layers: int, n_heads: int, albert_groups: bool = False) -> dict:
    """``{name: (model class, config factory)}`` for every supported family: BERT, RoBERTa, XLM-R, ELECTRA,
    ALBERT (ELECTRA and ALBERT with a separate embedding size; optionally ALBERT with 3 layer groups),
    DistilBERT, ModernBERT (local layers with a window of +-4 tokens, so windows cut the test sequences),
    DeBERTa-v2 (relative attention without buckets), DeBERTa-v3 (shared attention keys, log buckets,
    normalised relative embeddings, no token types) and MPNet.

    Token ids 0..4 are reserved in the test batches (0 = PAD, 3 = [CLS], 4 = [SEP]); every config pads with 0
    or, for the RoBERTa-style ones, 1."""
    common = common_config(n_layers, n_heads)
    specials = {"pad_token_id": 0, "bos_token_id": 3, "eos_token_id": 4}
    archs = {
        "bert": (BertForQuestionAnswering, lambda: BertConfig(**common)),
        "roberta": (RobertaForQuestionAnswering, lambda: RobertaConfig(**common, pad_token_id=1, type_vocab_size=1)),
        "xlm-roberta": (
            XLMRobertaForQuestionAnswering, lambda: XLMRobertaConfig(**common, pad_token_id=1, type_vocab_size=1)
        ),
        "electra": (ElectraForQuestionAnswering, lambda: ElectraConfig(**common, embedding_size=16)),
        "albert": (AlbertForQuestionAnswering, lambda: AlbertConfig(**common, embedding_size=16)),
        "distilbert": (
            DistilBertForQuestionAnswering,
            lambda: DistilBertConfig(
                vocab_size=common["vocab_size"], dim=common["hidden_size"], n_layers=n_layers, n_heads=n_heads,
                hidden_dim=common["intermediate_size"], max_position_embeddings=common["max_position_embeddings"],
                initializer_range=common["initializer_range"], pad_token_id=0,
            ),
        ),
        "modernbert": (
            ModernBertForQuestionAnswering,
            lambda: ModernBertConfig(
                **common, local_attention=8, global_attn_every_n_layers=2, **specials,
                cls_token_id=3, sep_token_id=4,
            ),
        ),
        "deberta-v2": (
            DebertaV2ForQuestionAnswering,
            lambda: DebertaV2Config(
                **common, type_vocab_size=2, relative_attention=True, pos_att_type=["p2c", "c2p"],
                max_relative_positions=16, pad_token_id=0,
            ),
        ),
        "deberta-v3": (
            DebertaV2ForQuestionAnswering,
            lambda: DebertaV2Config(
                **common, type_vocab_size=0, relative_attention=True, pos_att_type=["p2c", "c2p"],
                position_buckets=8, max_relative_positions=32, share_att_key=True, norm_rel_ebd="layer_norm",
                pad_token_id=0,
            ),
        ),
        "mpnet": (
            MPNetForQuestionAnswering,
            lambda: MPNetConfig(**common, pad_token_id=1, bos_token_id=3, eos_token_id=4),
        ),
    }
    if albert_groups:
        archs["albert-3-groups"] = (
            AlbertForQuestionAnswering, lambda: AlbertConfig(**common, embedding_size=16, num_hidden_groups=3)
        )
    return archs
