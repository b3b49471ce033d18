"""RecBole's Config with recbole-kgin's property files, model lookup and data lookup.

Layering, lowest priority first (each later layer overrides the earlier):

1. RecBole's own defaults: ``overall.yaml``, ``model/<Model>.yaml``,
   ``dataset/<dataset>.yaml`` and, for knowledge-aware models, ``knowledge_base.yaml``;
2. recbole-kgin's ``properties/overall.yaml``;
3. recbole-kgin's ``properties/model/<Model>.yaml``;
4. recbole-kgin's ``properties/dataset/<dataset>.yaml``;
5. recbole-kgin's ``properties/model/<Model>/<dataset>.yaml`` (a model's settings
   for one dataset);
6. the user's ``config_file_list``, then ``config_dict`` (the CLI passes its
   ``--key=value`` overrides here, so command line > files, as in RecBole).

Unlike RecBole's Config it never reads ``sys.argv`` itself, never runs a config string
as Python (strings are typed as literals, :mod:`recbole_kgin.common.literals`, and YAML is read
with a safe loader), looks models up in the plugin first, resolves the data folder
without any download prompt (:mod:`recbole_kgin.data.location`) and turns bad input
into :class:`UserInputError`.
"""

from __future__ import annotations

import os
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import recbole
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_kgin.common.config_checks import check_config_values
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.common.literals import PlainYamlLoader, typed_value
from recbole_kgin.common.resources import packaged_dir
from recbole_kgin.data.location import reads_kg, resolve_dataset_folder
from recbole_kgin.runtime.checkpoints import CONFIG_LAYERS
from recbole_kgin.runtime.distributed import init_worker_device
from recbole_kgin.utils import get_model

RECBOLE_PROPERTIES_DIR = Path(recbole.__file__).resolve().parent / "properties"
PROPERTIES_DIR = packaged_dir("properties")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class Config(RecBoleConfig):
    """RecBole Config layered with recbole-kgin's property files (see module docstring).

    Args:
        model: model name (plugin first, then RecBole) or model class.
        dataset: dataset name (the folder and file prefix of its atomic files).
        config_file_list: YAML files, later ones override earlier ones.
        config_dict: overrides of the highest priority.
    """

    def __init__(
        self,
        model: Union[str, type, None] = None,
        dataset: Optional[str] = None,
        config_file_list: Optional[List[str]] = None,
        config_dict: Optional[Dict[str, Any]] = None,
    ) -> None:
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except UserInputError:
            raise
        except (ValueError, TypeError, KeyError, NotImplementedError, AssertionError) as error:
            raise UserInputError(f"bad config: {_one_line(error)}") from error
        check_config_values(self.final_config_dict, self.model_class)
        if self["kg_items_only"] and self["MODEL_TYPE"] not in (ModelType.GENERAL, ModelType.KNOWLEDGE):
            raise UserInputError(
                f"kg_items_only applies to general and knowledge-aware models, not {self.model}: remove it"
            )

    def _init_device(self) -> None:
        """A distributed worker (``local_rank`` set) joins its process group with Gloo on
        CPUs or NCCL on GPUs (:mod:`recbole_kgin.runtime.distributed`); otherwise RecBole's."""
        if "local_rank" in self.final_config_dict:
            init_worker_device(self.final_config_dict)
        else:
            super()._init_device()

    # --- inputs ------------------------------------------------------------------
    def _build_yaml_loader(self) -> type:
        return PlainYamlLoader

    def _convert_config_dict(self, config_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Strings typed as literals (:func:`recbole_kgin.common.literals.typed_value`); RecBole
        ``eval()``-s them."""
        return {key: typed_value(value) if isinstance(value, str) else value for key, value in config_dict.items()}

    def _init_parameters_category(self) -> None:
        super()._init_parameters_category()
        # RecBole appends dataset keys to its module-level list; work on copies.
        self.parameters = {name: list(keys) for name, keys in self.parameters.items()}

    def _load_config_files(self, file_list: Optional[List[str]]) -> Dict[str, Any]:
        file_config_dict: Dict[str, Any] = {}
        for file in file_list or []:
            file_config_dict.update(self._read_yaml(file, "config file"))
        return file_config_dict

    def _read_yaml(self, file: Union[str, Path], what: str) -> Dict[str, Any]:
        if not os.path.isfile(file):
            raise UserInputError(f"{what} '{file}' not found: check the path")
        try:
            with open(file, "r", encoding="utf-8") as handle:
                content = yaml.load(handle.read(), Loader=self.yaml_loader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise UserInputError(
                f"{what} '{file}'{where}: not valid YAML ({getattr(error, 'problem', error)}); "
                f"write one 'key: value' per line"
            ) from error
        if content is None:
            return {}
        if not isinstance(content, dict):
            raise UserInputError(
                f"{what} '{file}': expected 'key: value' lines, got a {type(content).__name__}"
            )
        return content

    def _load_cmd_line(self) -> Dict[str, Any]:
        # The CLI parses sys.argv and passes overrides as config_dict; the API never
        # picks up the arguments of whatever program imported it (pytest, Ray, ...).
        return {}

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise UserInputError("no model given: pass --model=KGIN (or model: KGIN in a config file)")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise UserInputError("no dataset given: pass --dataset=ml-100k (or dataset: in a config file)")
        return model, model_class, dataset

    # --- property files ----------------------------------------------------------
    def _load_internal_config_dict(self, model, model_class, dataset) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        recbole_name = getattr(model_class, "recbole_properties", None)
        layers = []
        if self.external_config_dict.get("kg_items_only") and model_class.type == ModelType.GENERAL:
            # what RecBole layers for knowledge-aware models: load the .kg and .link columns
            layers.append(RECBOLE_PROPERTIES_DIR / "quick_start_config" / "knowledge_base.yaml")
        if recbole_name:
            layers.append(RECBOLE_PROPERTIES_DIR / "model" / f"{recbole_name}.yaml")
        layers += [
            PROPERTIES_DIR / "overall.yaml",
            PROPERTIES_DIR / "model" / f"{model}.yaml",
            PROPERTIES_DIR / "dataset" / f"{dataset}.yaml",
            PROPERTIES_DIR / "model" / model / f"{dataset}.yaml",
        ]
        for layer in layers:
            if layer.is_file():
                values = self._read_yaml(layer, "property file")
                self.internal_config_dict.update(values)
                if layer.parent.name == "dataset":
                    self.parameters["Dataset"] += [
                        key for key in values if key not in self.parameters["Dataset"]
                    ]

    # --- derived values ----------------------------------------------------------
    def _set_default_parameters(self) -> None:
        super()._set_default_parameters()
        folder = resolve_dataset_folder(
            self.dataset,
            self.external_config_dict.get("data_path"),
            reads_kg(self),
            self.final_config_dict.get("benchmark_filename"),
        )
        self.final_config_dict["data_path"] = folder
        self._drop_filters_on_absent_columns(folder)

    def _drop_filters_on_absent_columns(self, folder: str) -> None:
        """Skip ``val_interval`` filters whose column the .inter file lacks.

        Property files filter RecBole's downloadable files (e.g. ml-1m ``rating >= 4``);
        files that hold only the already-filtered positives have no such column.
        """
        intervals = self.final_config_dict.get("val_interval")
        if not intervals:
            return
        parts = self.final_config_dict.get("benchmark_filename") or [None]
        first = f"{self.dataset}.{parts[0]}.inter" if parts[0] else f"{self.dataset}.inter"
        with open(os.path.join(folder, first), "r", encoding=self.final_config_dict.get("encoding") or "utf-8") as handle:
            header = handle.readline().rstrip("\r\n").split(self.final_config_dict["field_separator"])
        columns = {field.split(":")[0] for field in header}
        kept = {field: interval for field, interval in intervals.items() if field in columns}
        for field in set(intervals) - set(kept):
            getLogger().warning(
                f"val_interval on '{field}' skipped: {first} has no '{field}' column "
                f"(its interactions are taken as already filtered)"
            )
        self.final_config_dict["val_interval"] = kept or None


def restore_config(state: Mapping[str, Any]):
    """The :class:`Config` that :func:`recbole_kgin.runtime.checkpoints.config_state`
    recorded, exactly as it was (no property file or data folder is read again)."""
    config = Config.__new__(Config)
    for name in CONFIG_LAYERS:
        setattr(config, name, dict(state[name]))
    config.model, config.dataset = state["model"], state["dataset"]
    config.model_class = get_model(config.model)
    config.yaml_loader = config._build_yaml_loader()
    return config
