"""TensorFlow's protocol buffer messages, built from our own descriptor at import.

A private descriptor pool keeps these apart from TensorFlow's own messages when
both live in one process (the tests import TensorFlow as the oracle).
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory

from weightscope._proto.descriptor import FILE_DESCRIPTOR

_POOL = descriptor_pool.DescriptorPool()
# AddSerializedFile spares importing descriptor_pb2 (~10 ms of every command's start).
_POOL.AddSerializedFile(FILE_DESCRIPTOR)


def _message(name: str) -> type:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"weightscope.tf.{name}"))


BundleHeaderProto = _message("BundleHeaderProto")
BundleEntryProto = _message("BundleEntryProto")
TensorShapeProto = _message("TensorShapeProto")
TensorSliceProto = _message("TensorSliceProto")
CheckpointState = _message("CheckpointState")
TrackableObjectGraph = _message("TrackableObjectGraph")
TrackableObjectGraphMerged = _message("TrackableObjectGraphMerged")
TrackableObjectAttributes = _message("TrackableObjectAttributes")
