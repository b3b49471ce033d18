"""The KGIN settings every benchmark run trains with (the paper's ml-1m-sized defaults,
3 hops), for our KGIN and RecBole's alike, and for a competing ``kgin`` load."""

from typing import Any, Dict

SHARED_SETTINGS: Dict[str, Any] = {
    "embedding_size": 64,
    "context_hops": 3,
    "n_factors": 4,
    "train_batch_size": 1024,
    "node_dropout_rate": 0.5,
    "mess_dropout_rate": 0.1,
    "kg_reverse_r": True,
    "ind": "distance",
    "sim_regularity": 1e-4,
    "reg_weight": 1e-5,
    "temperature": 0.2,
    "learning_rate": 1e-3,
    "show_progress": False,
    "state": "WARNING",
    "eval_batch_size": 4096,
}
