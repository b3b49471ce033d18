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


def test_the_tests_line_names_the_planned_family_and_an_undefined_t_test():
    from recbole_kgin.experiments.tuned_report import format_tests

    def comparison(against, p):
        return {"against": against, "metric": "recall@20", "pairs": 5, "mean_ours": 0.4, "mean_theirs": 0.39,
                "difference": 0.01, "ci_low": 0.005, "ci_high": 0.015, "relative": 0.0256, "p_value": p,
                "p_holm": None if p is None else min(1.0, 6 * p)}  # fmt: skip

    test = {"model": "KGIN", "test": "paired t-test; Holm", "family": 6,
            "comparisons": [comparison("BPR", 0.01), comparison("CKE", None)]}  # fmt: skip
    text = "\n".join(format_tests(test, partial=True))
    assert ("Holm over the 6 tests planned, 2 below: until the other 4 have run they count as p = 1, "
            "so these adjusted values can only fall.") in text
    assert "| CKE | recall@20 | 5 seeds |" in text and "undefined: every unit the same gap" in text
    test["family"] = 2
    assert "Holm over the 2 tests below." in "\n".join(format_tests(test))


def test_the_model_that_earns_more_splits_is_chosen_on_validation_never_on_test():
    from recbole_kgin.experiments.tuned_compare import best_other
    from recbole_kgin.experiments.tuned_records import ModelSummary

    def summary(model, valid, test):
        return ModelSummary(model, {}, valid, 5, {"recall@20": test}, {}, 10.0, 0.1, 1.0, 0)

    summaries = [summary("KGIN", 0.40, 0.40), summary("BPR", 0.37, 0.41), summary("LightGCN", 0.38, 0.39)]
    assert best_other(["KGIN", "BPR", "LightGCN"], summaries) == "LightGCN"  # BPR's test figure is higher
    assert best_other(["KGIN"], summaries[:1]) is None
