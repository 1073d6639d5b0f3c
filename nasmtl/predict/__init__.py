"""Performance predictors: ONNX graph -> encodings -> predictor ONNX files with cards; zero-cost proxies.

Importing the package loads only the encoding; the other names are imported from their modules
when first asked for (the strategy needs the search package, training needs the benchmark data).
"""

from importlib import import_module
from typing import Any

from nasmtl.predict.encoding import ENCODING_VERSION, FEATURE_NAMES, N_FEATURES, Encoding, describe, encode, feature_vector

_LAZY = {
    "TRANSNAS_TASKS": "data", "Dataset": "data", "FeatureCache": "data", "encode_designs": "data",
    "nb201_cache_path": "data", "nb201_dataset": "data", "transnas_design": "data", "transnas_table": "data",
    "PredictorError": "model", "fit_ensemble": "model", "kendall_tau": "model", "load_predictor": "model",
    "predict_torch": "model", "rank_metrics": "model", "save_predictor": "model",
    "PROXIES": "proxies", "zero_cost_proxies": "proxies",
    "ChoiceOneHot": "strategy", "PredictorStrategy": "strategy", "default_featurizer": "strategy",
    "group_split": "fit",
    "NB201_IMAGENET16": "source", "SourceScorer": "source", "nb201_imagenet16_source": "source",
}

__all__ = ["ENCODING_VERSION", "FEATURE_NAMES", "N_FEATURES", "Encoding", "describe", "encode", "feature_vector",
           *_LAZY]


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported from its module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    return value
