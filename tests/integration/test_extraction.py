"""The extract-attention command (mrcbench/grid/extraction.py): the choice of case-study questions."""
from mrcbench.grid import extraction


def test_unknown_case_study_ids_are_named_not_dropped_silently(capsys):
    from types import SimpleNamespace

    run = SimpleNamespace(features=SimpleNamespace(example_ids=["q1", "q1", "q2"]), examples=[],
                          spec=SimpleNamespace(eval="dev"))
    assert extraction.choose_case_studies(run, None, 2, ["q2", "typo", "q1"]) == [2, 0]
    err = capsys.readouterr().err
    assert err.strip() == ("warning: attention.case_study_ids: 'typo' not in eval split 'dev' "
                           "(no map stored for them)")
