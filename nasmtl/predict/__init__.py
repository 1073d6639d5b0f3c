"""Performance predictors: ONNX graph -> encodings -> predictor ONNX files with cards; zero-cost proxies."""

from nasmtl.predict.encoding import ENCODING_VERSION, FEATURE_NAMES, Encoding, describe, encode, feature_vector

__all__ = ["ENCODING_VERSION", "FEATURE_NAMES", "Encoding", "describe", "encode", "feature_vector"]
