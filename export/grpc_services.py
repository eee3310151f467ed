"""TF Serving's gRPC PredictionService and ModelService over a ModelRegistry."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from remi_tf.export.registry import DEFAULT_SIGNATURE, MAX_REQUEST_VALUES, ModelRegistry, ServingError

ERROR_CODES = {"OK": 0, "UNKNOWN": 2}  # tensorflow.error.Code values of a model version's status


def _checked_ndarray(name: str, proto: Any) -> np.ndarray:
    """A request TensorProto as an array, after checking its declared shape against what it holds: a
    38-byte proto can declare [100000, 100000] (TensorFlow would broadcast its one value to all)."""
    shape = [dim.size for dim in proto.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    if any(size < 0 for size in shape) or count > MAX_REQUEST_VALUES:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' declares shape {shape}: at most "
                                               f"{MAX_REQUEST_VALUES} values")
    held = len(proto.string_val) if proto.dtype == tf.string.as_datatype_enum else None
    if held is not None and held != count:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' declares shape {shape} ({count} values) but "
                                               f"holds {held}")
    return tf.make_ndarray(proto)


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """tf.make_tensor_proto's TensorProto, built directly: a string array's values added in one call
    (make_tensor_proto converts them one by one in Python: ~1.8 ms for one lookup's 250 item ids), a numeric
    array's bytes as tensor_content (make_tensor_proto: ~30 us an output; BENCHMARKS.md 7.7)."""
    shape = tf.TensorShape(array.shape).as_proto()
    if array.dtype.kind == "O" and all(isinstance(value, bytes) for value in array.flat):
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape)
        proto.string_val.extend(array.ravel().tolist())
        return proto
    if array.dtype.kind in "fiu" and array.size:
        return tensor_pb2.TensorProto(dtype=tf.as_dtype(array.dtype).as_datatype_enum, tensor_shape=shape,
                                      tensor_content=np.ascontiguousarray(array).tobytes())
    return tf.make_tensor_proto(array)


def _requested_version(model_spec: Any) -> int | None:
    """The version a request's ModelSpec names (None: the newest); version labels are refused."""
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise ServingError("INVALID_ARGUMENT", f"version_label {model_spec.version_label!r}: remi serve has no "
                                               "version labels (no models.config labels); ask for a version number")
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer as TF Serving does for a
    model whose signatures are all predict signatures."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def _not_predict(self, request: Any, context: grpc.ServicerContext, kind: str, expected_method: str) -> None:
        try:
            specs = [request.model_spec] if hasattr(request, "model_spec") else [t.model_spec for t in request.tasks]
            for spec in specs:
                _, signatures = self.registry.signature_defs(spec.name, _requested_version(spec))
                name = spec.signature_name or DEFAULT_SIGNATURE
                if name not in signatures.signature_def:
                    raise ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {name}")
                method = signatures.signature_def[name].method_name
                raise ServingError("INVALID_ARGUMENT", f"Expected {kind} signature method_name to be "
                                                       f"{expected_method}. Was: {method}")
            raise ServingError("INVALID_ARGUMENT", "MultiInference request has no tasks")
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the gRPC service's method name)
        self._not_predict(request, context, "classification", "tensorflow/serving/classify")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the gRPC service's method name)
        self._not_predict(request, context, "regression", "tensorflow/serving/regress")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the gRPC service's method name)
        self._not_predict(request, context, "classification", "tensorflow/serving/classify")

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
                ) -> predict_pb2.PredictResponse:  # noqa: N802 (the proto's naming)
        try:
            version = _requested_version(request.model_spec)
            inputs = {key: _checked_ndarray(key, proto) for key, proto in request.inputs.items()}
            served_version, outputs = self.registry.predict(request.model_spec.name, version,
                                                            request.model_spec.signature_name, inputs)
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        except (tf.errors.OpError, ValueError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(error, "message", str(error)))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = served_version
        response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tensor_proto(value))
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:  # noqa: N802 (the gRPC service's method name)
        unsupported = [field for field in request.metadata_field if field != "signature_def"]
        if unsupported or not request.metadata_field:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field(s) {unsupported or '(none)'} not "
                                                            "supported; request \"signature_def\"")
        try:
            served_version, signatures = self.registry.signature_defs(request.model_spec.name,
                                                                      _requested_version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = served_version
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
                       ) -> get_model_status_pb2.GetModelStatusResponse:  # noqa: N802 (the gRPC service's method name)
        try:
            status = self.registry.status(request.model_spec.name, _requested_version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in status:
            added = response.model_version_status.add(
                version=int(entry["version"]),
                state=get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"]))
            added.status.error_code = ERROR_CODES[entry["status"]["error_code"]]
            added.status.error_message = entry["status"]["error_message"]
        return response
