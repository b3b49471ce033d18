"""Fixes that let RecBole 1.2.1 run on current Python packages.

RecBole 1.2.1 (the latest release) breaks in four places on the versions that pip
installs (torch >= 2.6, SciPy >= 1.12, numpy >= 1.24, and without DGL 0.x), one of
its modules slows every model trained after it is imported (fix 5), two of its own
bugs reach users (fix 6: data-dependent metrics crash, for every model; fix 7:
negative sampling that loops forever), every run prints third-party warnings that a
user cannot act on (fix 8), its distributed training works on GPUs only (fix 9), and
its workers race to create the same folders (fix 10), and it unpickles saved datasets
and dataloaders that it finds in ``saved/`` without being asked (fix 11), and it builds the
KG sampler's tables for models that never draw from it (fix 12). Each fix below names the
RecBole line it addresses and leaves the math of the affected model unchanged.
:func:`apply` installs all of them; it is idempotent and runs when
:mod:`recbole_kgin` is imported.

The other breakage, pandas 3 (RecBole fills missing values with chained
``feat[field].fillna(..., inplace=True)``, a no-op under copy-on-write), is handled
by pinning ``pandas<3`` in ``setup.py`` rather than by a patch.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import sys
import types
import warnings
from typing import Any, Dict

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import ModelType


# --- 1. torch >= 2.6: torch.load defaults to weights_only=True ---------------------
# recbole/trainer/trainer.py:583 (Trainer.evaluate, load_best_model=True) and
# recbole/trainer/trainer.py:323 (Trainer.resume_checkpoint) call
# ``torch.load(checkpoint_file, map_location=self.device)``. RecBole's checkpoints
# pickle the Config object, which the weights-only unpickler rejects. recbole-kgin's
# trainers write checkpoints as plain data with RecBole's enums in the config
# (recbole_kgin/runtime/checkpoints.py); the trainer module gets a view of ``torch`` whose
# ``load`` reads them weights-only with those few types allowed
# (``checkpoints.read_plain``), and refuses any other file in one line. Every other
# attribute is torch's own, and torch itself is left untouched.
class _PlainCheckpointTorch(types.ModuleType):
    """``torch`` as seen by recbole.trainer.trainer, with a ``load`` of plain data only."""

    def __init__(self) -> None:
        super().__init__("torch")

    @staticmethod
    def load(f: Any, map_location: Any = None, **_: Any) -> Any:
        from recbole_kgin.runtime.checkpoints import read_plain

        return read_plain(f, map_location)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _patch_trainer_torch_load() -> None:
    import recbole.trainer.trainer as recbole_trainer

    if not isinstance(recbole_trainer.torch, _PlainCheckpointTorch):
        recbole_trainer.torch = _PlainCheckpointTorch()


# --- 2. SciPy >= 1.12: dok_matrix._update was removed --------------------------------
# recbole/model/knowledge_aware_recommender/kgin.py:356 (and lightgcn.py:111,
# ngcf.py:110, ncl.py:131, gcmc.py:174, spectralcf.py:123, mcclk.py:425) build their
# adjacency with ``A._update(data_dict)``. SciPy < 1.12 defined it as a plain
# ``dict.update`` of the (row, col) -> value store; this restores exactly that.
def _dok_update(self: sp.dok_matrix, data: Dict[Any, Any]) -> None:
    self._dict.update(data)


def _patch_dok_update() -> None:
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_update


# --- 3. KGAT needs DGL 0.x ---------------------------------------------------------
# recbole/model/knowledge_aware_recommender/kgat.py:87 builds
# ``dataset.ckg_graph(form="dgl")`` and kgat.py:146-156 (KGAT.init_graph) calls
# ``dgl.edge_subgraph(..., preserve_nodes=True).adjacency_matrix(transpose=False,
# scipy_fmt="coo")``, arguments no installable DGL accepts. init_graph computes
# A = sum over relations r of D_r^-1 A_r, where A_r[h, t] counts the CKG edges
# (h, r, t) with rows as sources (DGL's transpose=False) and D_r its row sums. The
# replacement computes the same matrix with SciPy from the CKG edges KGAT already
# holds (all_hs, all_ts, all_rs), and ckg_graph(form="dgl") returns those edges as a
# SciPy COO matrix when DGL cannot be imported (KGAT keeps it but no longer reads it).
def _kgat_init_graph(self: Any) -> torch.Tensor:
    heads = self.all_hs.cpu().numpy()
    tails = self.all_ts.cpu().numpy()
    relations = self.all_rs.cpu().numpy()
    n_nodes = self.matrix_size[0]
    final_adj = sp.csr_matrix((n_nodes, n_nodes), dtype=np.float64)
    for rel_type in range(1, self.n_relations):
        selected = relations == rel_type
        adj = sp.coo_matrix(
            (np.ones(int(selected.sum())), (heads[selected], tails[selected])),
            shape=(n_nodes, n_nodes),
        )
        row_sum = np.asarray(adj.sum(1)).flatten()
        with np.errstate(divide="ignore"):
            d_inv = np.power(row_sum, -1.0)
        d_inv[np.isinf(d_inv)] = 0.0
        final_adj = final_adj + sp.diags(d_inv).dot(adj)
    final_adj = final_adj.tocoo()
    indices = torch.LongTensor(np.array([final_adj.row, final_adj.col]))
    values = torch.FloatTensor(final_adj.data)
    # check_invariants=False is torch's default, said explicitly: left implicit, torch 2.13
    # warns once per process ("Sparse invariant checks are implicitly disabled")
    matrix = torch.sparse_coo_tensor(indices, values, self.matrix_size, check_invariants=False)
    return matrix.coalesce().to(self.device)


def _dgl_importable() -> bool:
    try:
        import dgl  # noqa: F401
    except Exception:  # DGL missing, or an install that fails to load
        return False
    return True


def _ckg_graph_without_dgl(original):
    @functools.wraps(original)
    def ckg_graph(self, form="coo", value_field=None):
        if form == "dgl" and not _dgl_importable():
            form = "coo"
        return original(self, form=form, value_field=value_field)

    ckg_graph.__wrapped_by_recbole_kgin__ = True
    return ckg_graph


def _patch_kgat_without_dgl() -> None:
    from recbole.data.dataset import KnowledgeBasedDataset
    from recbole.model.knowledge_aware_recommender.kgat import KGAT

    KGAT.init_graph = _kgat_init_graph
    if not getattr(KnowledgeBasedDataset.ckg_graph, "__wrapped_by_recbole_kgin__", False):
        KnowledgeBasedDataset.ckg_graph = _ckg_graph_without_dgl(
            KnowledgeBasedDataset.ckg_graph
        )


# --- 4. numpy >= 1.24: the aliases np.float, np.int, np.bool, ... were removed --------
# recbole/evaluator/metrics.py:90 (MRR), :131 (MAP), :190 (NDCG) and
# recbole/data/interaction.py:31 use np.float / np.int. RecBole defines the aliases
# in Config.compatibility_settings (recbole/config/configurator.py:625), i.e. only
# once a Config is built; a run resumed or explained from a checkpoint unpickles its
# Config without building one and crashes in evaluation. Defining them on import
# (with RecBole's own code) makes every entry point safe.
def _patch_numpy_aliases() -> None:
    if not hasattr(np, "float"):
        from recbole.config.configurator import Config

        Config.compatibility_settings(None)


# --- 5. autograd anomaly detection switched on by an import -------------------------
# recbole/model/sequential_recommender/sine.py:25 runs
# ``torch.autograd.set_detect_anomaly(True)`` when the module is imported, and
# recbole.utils.get_model (like any lookup that passes through
# recbole.model.sequential_recommender) imports it before it reaches the knowledge-aware
# models. From then on every backward pass in the process records and checks its
# graph: KGIN on lastfm trained at 0.8-1.1 s/epoch instead of 0.35-0.45 s after a
# KGCN lookup. The module is imported here once, and the mode put back as it was.
def _keep_anomaly_detection_as_it_was() -> None:
    was_enabled = torch.is_anomaly_enabled()
    importlib.import_module("recbole.model.sequential_recommender.sine")
    torch.autograd.set_detect_anomaly(was_enabled)


# --- 6. data-dependent metrics (ItemCoverage, GiniIndex, ...) crash ------------------
# Two RecBole bugs stop ItemCoverage, AveragePopularity, GiniIndex, TailPercentage
# (and any metric that needs data.num_items, data.count_items, ...).
# recbole/evaluator/collector.py:87-94 (Collector.data_collect) reads
# ``train_data.dataset`` for ItemCoverage, GiniIndex (data.num_items),
# AveragePopularity, TailPercentage (data.count_items) and others. RecBole's data
# loaders answer ``dataset`` with their ``_dataset`` (AbstractDataLoader.__getattribute__,
# recbole/data/dataloader/abstract_dataloader.py:109), but KnowledgeBasedDataLoader
# (recbole/data/dataloader/knowledge_dataloader.py:70) is no AbstractDataLoader and has
# only ``_dataset``: every such metric raised AttributeError after the first epoch.
# The property gives it the same answer: the training split it wraps.
# recbole/evaluator/collector.py:226-227 (Collector.get_data_struct) then calls
# ``.cpu()`` on every collected value, but data.num_items is an int and
# data.count_items a Counter: AttributeError for every model. The replacement moves
# the tensors only, and is otherwise RecBole's function.
def _knowledge_loader_dataset(self: Any) -> Any:
    return self._dataset


def _get_data_struct(self: Any) -> Any:
    store = self.data_struct._data_dict
    for key, value in store.items():
        if isinstance(value, torch.Tensor):
            store[key] = value.cpu()
    returned_struct = copy.deepcopy(self.data_struct)
    for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
        if key in self.data_struct:
            del self.data_struct[key]
    return returned_struct


def _patch_data_metrics() -> None:
    from recbole.data.dataloader.knowledge_dataloader import KnowledgeBasedDataLoader
    from recbole.evaluator.collector import Collector

    if not hasattr(KnowledgeBasedDataLoader, "dataset"):
        KnowledgeBasedDataLoader.dataset = property(_knowledge_loader_dataset)
    Collector.get_data_struct = _get_data_struct


# --- 7. negative sampling with no negative left: a hang or a traceback ---------------
# recbole/sampler/sampler.py:169-187 (AbstractSampler.sample_by_key_ids) redraws until
# no drawn item is one of the user's positives. Popularity sampling (eval mode
# ``popNNN``, ``distribution: popularity``) draws only items that occur in the
# interactions (sampler.py:229, _get_candidates_list); a user whose positives cover all
# of them makes that loop run forever, in _pop_sampling (sampler.py:114). RecBole's own
# guard (sampler.py:256) checks the uniform case only, and raises a bare ValueError.
# Both now stop before any training with one line naming the phase and a user.
def _user_token(sampler: Any, user: int) -> str:
    return str(sampler.datasets[0].id2token(sampler.uid_field, user))


def _check_negatives_exist(sampler: Any) -> None:
    """Raise UserInputError if some user of ``sampler``'s phase has no item left to
    draw as a negative under its distribution."""
    from recbole_kgin.common.errors import UserInputError

    if sampler.distribution == "popularity":
        drawable = set(sampler.prob)
        what = "every item that popularity sampling can draw (items that occur in the interactions)"
    else:
        drawable = set(range(1, sampler.item_num))
        what = "every item"
    stuck = [user for user, used in enumerate(sampler.used_ids) if len(used) >= len(drawable) and drawable <= used]
    if stuck:
        raise UserInputError(
            f"negative sampling ({sampler.distribution}, phase {sampler.phase}): {len(stuck)} user(s), "
            f"e.g. user {_user_token(sampler, stuck[0])}, have interacted with {what}, so no negative "
            f"exists for them; filter them with user_inter_num_interval, or evaluate with eval_args mode full"
        )


def _set_phase_checking_negatives(original):
    @functools.wraps(original)
    def set_phase(self, phase):
        sampler = original(self, phase)
        _check_negatives_exist(sampler)
        return sampler

    set_phase.__wrapped_by_recbole_kgin__ = True
    return set_phase


def _get_used_ids_in_one_line(original):
    @functools.wraps(original)
    def get_used_ids(self):
        from recbole_kgin.common.errors import UserInputError

        try:
            return original(self)
        except ValueError as error:
            raise UserInputError(f"negative sampling: {' '.join(str(error).split())}") from None

    get_used_ids.__wrapped_by_recbole_kgin__ = True
    return get_used_ids


def _patch_sampler_checks() -> None:
    from recbole.sampler.sampler import Sampler

    if not getattr(Sampler.set_phase, "__wrapped_by_recbole_kgin__", False):
        Sampler.set_phase = _set_phase_checking_negatives(Sampler.set_phase)
        Sampler.get_used_ids = _get_used_ids_in_one_line(Sampler.get_used_ids)


# --- 8. third-party warnings that mean nothing to our users --------------------------
# Every run printed them, from code the user cannot change: pandas' chained
# ``fillna(inplace=True)`` FutureWarning from recbole/data/dataset/dataset.py:648,650
# (it works on pandas < 3, which setup.py pins), torch's GradScaler deprecation from
# recbole/trainer/trainer.py:235, setuptools' pkg_resources deprecation from
# ray/_private/parameter.py:4, and torch's ``torch.sparse.FloatTensor`` deprecation from
# RecBole's KGAT (kgat.py:300, in every KGAT run) and RecBole's KGIN (kgin.py:369, the
# speed benchmark's baseline). Each filter matches the message and the module that
# issues it, so the same warnings from anywhere else, ours and the data checks
# included, still show.
_SPARSE_CONSTRUCTOR_DEPRECATED = r"torch\.sparse\.SparseTensor\(indices, values, shape, \*, device=\) is deprecated"
KNOWN_WARNINGS = (
    (FutureWarning, r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment",
     r"recbole\.data\.dataset\.dataset"),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"recbole\.trainer\.trainer"),
    (UserWarning, r"pkg_resources is deprecated as an API", r"ray\._private\.parameter"),
    (UserWarning, _SPARSE_CONSTRUCTOR_DEPRECATED, r"recbole\.model\.knowledge_aware_recommender\.kgat"),
    (UserWarning, _SPARSE_CONSTRUCTOR_DEPRECATED, r"recbole\.model\.knowledge_aware_recommender\.kgin"),
)  # fmt: skip


def _silence_known_warnings() -> None:
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


# --- 9. DistributedDataParallel on CPU --------------------------------------------
# recbole/trainer/trainer.py:62 (AbstractTrainer.__init__) wraps every distributed model
# in ``DistributedDataParallel(model, device_ids=[local_rank])``; torch refuses
# ``device_ids`` for a CPU module, so RecBole can only train across GPUs. The trainer
# module gets a constructor that leaves ``device_ids`` out for CPU modules (Gloo
# workers, recbole_kgin/runtime/distributed.py) and passes it unchanged otherwise.
def _ddp_on_any_device(module: torch.nn.Module, device_ids=None, **kwargs: Any):
    from torch.nn.parallel import DistributedDataParallel

    on_cpu = all(parameter.device.type == "cpu" for parameter in module.parameters())
    return DistributedDataParallel(module, device_ids=None if on_cpu else device_ids, **kwargs)


def _patch_ddp_on_cpu() -> None:
    trainer = importlib.import_module("recbole.trainer.trainer")
    trainer.DistributedDataParallel = _ddp_on_any_device


# --- 10. Folders created by several processes at once --------------------------------
# recbole/utils/utils.py:51-52 (ensure_dir) checks ``os.path.exists`` and then calls
# ``os.makedirs``; distributed workers start together and each creates ``./log/<model>``
# (recbole/utils/logger.py:77-79) and the checkpoint folder (recbole/trainer/trainer.py:131),
# so the slower one dies with FileExistsError when the other created it in between (it
# happens with two Gloo workers on a busy machine). Every module that imported ensure_dir gets one
# that creates the folder with exist_ok.
ENSURE_DIR_MODULES = ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.data.utils",
                      "recbole.trainer.trainer")  # fmt: skip


def _ensure_dir(dir_path: str) -> None:
    """Create ``dir_path`` unless it exists, also when another process creates it meanwhile."""
    os.makedirs(dir_path, exist_ok=True)


def _patch_ensure_dir_race() -> None:
    for name in ENSURE_DIR_MODULES:
        importlib.import_module(name).ensure_dir = _ensure_dir


# --- 11. saved datasets and dataloaders are unpickled unasked ------------------------
# recbole/data/utils.py:58-61 (create_dataset) unpickles
# ``<checkpoint_dir>/<dataset>-<DatasetClass>.pth`` whenever that file exists, and
# recbole/data/utils.py:118-122 (load_split_dataloaders, called first by
# data_preparation) unpickles ``<checkpoint_dir>/<dataset>-for-<model>-dataloader.pth``:
# anyone who can write into ``saved/`` runs code in the next run, without any setting.
# Here the dataset is always built from its atomic files and the loaders from the
# dataset; recbole-kgin keeps processed data in its own authenticated cache
# (recbole_kgin/data/startup_cache.py), and its config checks refuse RecBole's
# ``save_dataset``/``save_dataloaders`` keys. The dataset class is chosen as RecBole
# chooses it.
DATASET_CLASSES = {ModelType.GENERAL: "Dataset", ModelType.SEQUENTIAL: "SequentialDataset",
                   ModelType.CONTEXT: "Dataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
                   ModelType.TRADITIONAL: "Dataset", ModelType.DECISIONTREE: "Dataset"}  # fmt: skip


def create_dataset_from_files(config: Any) -> Any:
    """RecBole's ``create_dataset`` without its read of a pickled dataset."""
    module = importlib.import_module("recbole.data.dataset")
    name = config["model"] + "Dataset"
    dataset_class = getattr(module, name) if hasattr(module, name) else getattr(module, DATASET_CLASSES[config["MODEL_TYPE"]])
    return dataset_class(config)


def _no_saved_dataloaders(config: Any) -> None:
    """RecBole's ``load_split_dataloaders``, which never reads: the loaders are built."""
    return None


def _patch_pickled_data_loads() -> None:
    data_utils = importlib.import_module("recbole.data.utils")
    data_utils.load_split_dataloaders = _no_saved_dataloaders
    importlib.import_module("recbole.data").create_dataset = create_dataset_from_files
    data_utils.create_dataset = create_dataset_from_files
    for name in ("recbole.quick_start.quick_start", "recbole.quick_start"):  # imported before: its own name
        if name in sys.modules:
            sys.modules[name].create_dataset = create_dataset_from_files


# --- 12. the KG sampler's used ids are built for models that never draw KG negatives --
# recbole/sampler/sampler.py:312-323 (KGSampler.__init__, through AbstractSampler.__init__,
# sampler.py:39) builds ``used_ids`` at once: a Python loop over every KG triple into
# one set per head entity (sampler.py:337-339), some seconds for the 5M triples of the
# Amazon-Book shape, and the sets then fill the start-up cache. Only models that RecBole
# trains in its KG modes (KGAT, CKE, KTUP, ...) draw KG negatives; KGIN and KGCN never
# do. ``used_ids`` becomes a property that builds them on first read: the same sets, at
# the first KG batch of the models that draw them.
def _kg_sampler_init(self: Any, dataset: Any, distribution: str = "uniform", alpha: float = 1.0) -> None:
    """RecBole's ``KGSampler.__init__`` (sampler.py:312-323, 36-40) without building ``used_ids``."""
    self.dataset = dataset
    self.hid_field = dataset.head_entity_field
    self.tid_field = dataset.tail_entity_field
    self.hid_list = dataset.head_entities
    self.tid_list = dataset.tail_entities
    self.head_entities = set(dataset.head_entities)
    self.entity_num = dataset.entity_num
    self.distribution = ""
    self.alpha = alpha
    self.set_distribution(distribution)


def _used_ids_on_first_read(self: Any) -> Any:
    if self.__dict__.get("_used_ids") is None:
        self.__dict__["_used_ids"] = self.get_used_ids()
    return self.__dict__["_used_ids"]


def _set_used_ids(self: Any, value: Any) -> None:
    self.__dict__["_used_ids"] = value


def _patch_kg_sampler_used_ids_on_demand() -> None:
    sampler = importlib.import_module("recbole.sampler.sampler")
    sampler.KGSampler.__init__ = _kg_sampler_init
    sampler.KGSampler.used_ids = property(_used_ids_on_first_read, _set_used_ids)


def apply() -> None:
    """Install every fix; calling it again changes nothing."""
    _patch_trainer_torch_load()
    _patch_dok_update()
    _patch_kgat_without_dgl()
    _patch_numpy_aliases()
    _keep_anomaly_detection_as_it_was()
    _patch_data_metrics()
    _patch_sampler_checks()
    _silence_known_warnings()
    _patch_ddp_on_cpu()
    _patch_ensure_dir_race()
    _patch_pickled_data_loads()
    _patch_kg_sampler_used_ids_on_demand()
