"""Tiny randomly initialised QA models of every supported encoder family (no download needed)."""
from transformers import (
    AlbertConfig,
    AlbertForQuestionAnswering,
    BertConfig,
    BertForQuestionAnswering,
    ElectraConfig,
    ElectraForQuestionAnswering,
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
    """``{name: (model class, config factory)}`` for BERT, RoBERTa, XLM-R, ELECTRA and ALBERT
    (ELECTRA and ALBERT with a separate embedding size; optionally ALBERT with 3 layer groups)."""
    common = common_config(n_layers, n_heads)
    archs = {
        "bert": (BertForQuestionAnswering, lambda: BertConfig(**common)),
        "roberta": (RobertaForQuestionAnswering, lambda: RobertaConfig(**common, pad_token_id=1, type_vocab_size=1)),
        "xlm-roberta": (
            XLMRobertaForQuestionAnswering, lambda: XLMRobertaConfig(**common, pad_token_id=1, type_vocab_size=1)
        ),
        "electra": (ElectraForQuestionAnswering, lambda: ElectraConfig(**common, embedding_size=16)),
        "albert": (AlbertForQuestionAnswering, lambda: AlbertConfig(**common, embedding_size=16)),
    }
    if albert_groups:
        archs["albert-3-groups"] = (
            AlbertForQuestionAnswering, lambda: AlbertConfig(**common, embedding_size=16, num_hidden_groups=3)
        )
    return archs
