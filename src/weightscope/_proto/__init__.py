"""TensorFlow's, ONNX's and Core ML's protocol buffer messages, built from our own descriptors at import.

A private descriptor pool keeps these apart from TensorFlow's and onnx's own messages
when both live in one process (the tests import them as oracles).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory

from weightscope._proto.descriptor import COREML_FILE_DESCRIPTOR, FILE_DESCRIPTOR, ONNX_FILE_DESCRIPTOR

_POOL = descriptor_pool.DescriptorPool()
# AddSerializedFile spares importing descriptor_pb2 (~10 ms of every command's start).
_POOL.AddSerializedFile(FILE_DESCRIPTOR)
_POOL.AddSerializedFile(ONNX_FILE_DESCRIPTOR)
_POOL.AddSerializedFile(COREML_FILE_DESCRIPTOR)


def _message(name: str, package: str = "weightscope.tf") -> Any:  # a class built at run time
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{package}.{name}"))


BundleHeaderProto = _message("BundleHeaderProto")
BundleEntryProto = _message("BundleEntryProto")
TensorShapeProto = _message("TensorShapeProto")
TensorSliceProto = _message("TensorSliceProto")
CheckpointState = _message("CheckpointState")
TrackableObjectGraph = _message("TrackableObjectGraph")
TrackableObjectGraphMerged = _message("TrackableObjectGraphMerged")
TrackableObjectAttributes = _message("TrackableObjectAttributes")

# ONNX (onnx.proto): the messages a model's initializers are read from.
OnnxModelProto = _message("ModelProto", "weightscope.onnx")
OnnxTensorProto = _message("TensorProto", "weightscope.onnx")

# Core ML (coreml.proto): a model's neural-network layers and ML-program ops.
CoreMLModel = _message("Model", "weightscope.coreml")
