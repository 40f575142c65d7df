"""Write the broken Core ML files of tests/corpus/coreml/ (run from anywhere; needs only weightscope and numpy).

The packages are copies of the fixtures coremltools made (tests/fixtures/coreml/), damaged byte by byte; the
``.mlmodel`` files are built with weightscope's own subset of Core ML's messages, whose field numbers are Core ML's.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weightscope._proto import CoreMLModel

HERE = Path(__file__).resolve().parent / "coreml"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coreml"
FIRST_BLOB = 64  # coremltools writes the first blob's metadata right after the 64-byte storage header


def _package(name: str, damage: Callable[[Path], None], source: str = "mlp_fp16.mlpackage") -> None:
    package = HERE / name
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(FIXTURES / source, package)
    damage(package)


def _weights(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _patch(offset: int, layout: str, value: int) -> Callable[[Path], None]:
    def damage(package: Path) -> None:
        data = bytearray(_weights(package).read_bytes())
        struct.pack_into(layout, data, offset, value)
        _weights(package).write_bytes(bytes(data))

    return damage


def _cut(size: int) -> Callable[[Path], None]:
    return lambda package: _weights(package).write_bytes(_weights(package).read_bytes()[:size])


def _manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(package: Path) -> None:
        manifest = json.loads((package / "Manifest.json").read_text())
        change(manifest)
        (package / "Manifest.json").write_text(json.dumps(manifest))

    return damage


def _escape(manifest: dict[str, Any]) -> None:
    manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"] = "../../outside.mlmodel"


def _network(*layers: Callable[[Any], None]) -> bytes:
    model = CoreMLModel(specificationVersion=4)
    for fill in layers:
        fill(model.neuralNetwork.layers.add())
    serialized: bytes = model.SerializeToString()
    return serialized


def _dense(name: str, values: int, **weights: Any) -> Callable[[Any], None]:
    def fill(layer: Any) -> None:
        layer.name = name
        layer.innerProduct.inputChannels, layer.innerProduct.outputChannels = 3, 2
        layer.innerProduct.weights.floatValue.extend([0.5] * values)
        for field, value in weights.items():
            if field == "quantization":
                layer.innerProduct.weights.quantization.numberOfBits = value
            else:
                setattr(layer.innerProduct.weights, field, value)

    return fill


def _program_with_bytes(length: int) -> bytes:
    model = CoreMLModel(specificationVersion=7)
    function = model.mlProgram.functions["main"]
    function.opset = "CoreML6"
    op = function.block_specializations["CoreML6"].operations.add(type="const")
    output = op.outputs.add(name="w")
    value = op.attributes["val"]
    for target in (output.type, value.type):
        target.tensorType.dataType = 10  # FLOAT16
        target.tensorType.dimensions.add().constant.size = 4
    value.immediateValue.tensor.bytes.values = b"\0" * length
    serialized: bytes = model.SerializeToString()
    return serialized


def main() -> None:
    HERE.mkdir(exist_ok=True)
    _package("CorruptCheckpointError--bad-sentinel.mlpackage", _patch(FIRST_BLOB, "<I", 0xCAFEBABE))
    _package("CorruptCheckpointError--blob-type-differs.mlpackage", _patch(FIRST_BLOB + 4, "<I", 2))
    _package("CorruptCheckpointError--blob-size-mismatch.mlpackage", _patch(FIRST_BLOB + 8, "<Q", 6))
    _package("TruncatedFileError--blob-data-past-end.mlpackage", _patch(FIRST_BLOB + 16, "<Q", 1 << 40))
    _package("TruncatedFileError--blob-offset-past-end.mlpackage", _cut(300))
    _package("TruncatedFileError--weight-file-shorter-than-its-header.mlpackage", _cut(20))
    _package("UnsupportedFormatError--storage-version-1.mlpackage", _patch(4, "<I", 1))
    _package("CheckpointNotFoundError--weight-file-missing.mlpackage", lambda package: _weights(package).unlink())
    _package("RefusedError--model-path-escapes-the-package.mlpackage", _manifest(_escape))
    _package(
        "CorruptCheckpointError--manifest-names-no-model.mlpackage", _manifest(lambda m: m.pop("rootModelIdentifier"))
    )
    files = {
        "CorruptCheckpointError--truncated-protobuf.mlmodel": (FIXTURES / "nn_layers.mlmodel").read_bytes()[:300],
        "CorruptCheckpointError--weights-count-differs-from-shape.mlmodel": _network(_dense("dense", 5)),
        "CorruptCheckpointError--weights-in-two-fields.mlmodel": _network(_dense("dense", 6, float16Value=b"\0" * 12)),
        "CorruptCheckpointError--quantised-codes-too-short.mlmodel": _network(
            _dense("dense", 0, rawValue=b"\0" * 5, quantization=8)
        ),
        "CorruptCheckpointError--quantised-without-parameters.mlmodel": _network(
            _dense("dense", 0, rawValue=b"\0" * 6, quantization=8)
        ),
        "UnsupportedFormatError--quantised-to-9-bits.mlmodel": _network(
            _dense("dense", 0, rawValue=b"\0" * 7, quantization=9)
        ),
        "CorruptCheckpointError--layer-named-twice.mlmodel": _network(_dense("dense", 6), _dense("dense", 6)),
        "CorruptCheckpointError--immediate-value-of-the-wrong-length.mlmodel": _program_with_bytes(6),
        "CorruptCheckpointError--no-model-type.mlmodel": CoreMLModel(specificationVersion=4).SerializeToString(),
        "UnsupportedFormatError--tree-ensemble.mlmodel": CoreMLModel(
            treeEnsembleRegressor=b"\x0a\x00"
        ).SerializeToString(),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
