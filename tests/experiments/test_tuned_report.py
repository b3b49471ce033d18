from recbole_kgin.experiments.tuned_records import Budget
from recbole_kgin.experiments.tuned_report import protocol_line

SETTINGS = {"train_batch_size": 2048, "embedding_size": 64, "stopping_step": 20}


def test_runs_on_more_splits_are_planned_while_models_are_pending_and_named_once_run():
    budget = Budget(trials=20, tune_epochs=500, seeds=5, max_epochs=500, split_seeds=2)
    planned = protocol_line(budget, SETTINGS, ["KGIN", "BPR", "CKE"], "BPR", pending=["CKE"])
    assert "Once every model has run, KGIN and the best other model also run the same seeds on 2 more split(s)." in planned
    assert "also ran" not in planned
    done = protocol_line(budget, SETTINGS, ["KGIN", "BPR", "CKE"], "BPR")
    assert done.endswith("KGIN and BPR also ran the same seeds on 2 more split(s).")
    assert "more split" not in protocol_line(Budget(trials=20, tune_epochs=500, seeds=5, max_epochs=500), SETTINGS,
                                             ["KGIN", "BPR"], "BPR")
