"""Write tests/corpus/openvino/: broken and hostile OpenVINO IRs, each ``<Error>--<why>.xml`` with its ``.bin``.

Both files of a pair are corpus entries (either opens the IR) and must raise the same error; an IR whose .bin is the
damage has none. The XML is written here by hand, after ``ov.save_model``'s (tests/fixtures/openvino): a Parameter,
a Const ``fc.weight`` f32 [3, 2] at offset 0 of a 24-byte .bin, a MatMul and a Result; then one thing is wrong per
IR. Run from the repo root with any Python: ``python tests/corpus/make_openvino_corpus.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "openvino"
WEIGHTS = np.arange(6, dtype=np.float32).tobytes()
CONST = '<data element_type="f32" shape="3, 2" offset="0" size="24" />'
EDGES = """<edge from-layer="0" from-port="0" to-layer="2" to-port="0" />
  <edge from-layer="1" from-port="0" to-layer="2" to-port="1" />
  <edge from-layer="2" from-port="2" to-layer="3" to-port="0" />"""


def ir(const: str = CONST, edges: str = EDGES, head: str = '<?xml version="1.0"?>', version: str = "11") -> str:
    return f"""{head}
<net name="tiny" version="{version}">
 <layers>
  <layer id="0" name="x" type="Parameter" version="opset1">
   <data shape="1,2" element_type="f32" />
   <output><port id="0" precision="FP32"><dim>1</dim><dim>2</dim></port></output>
  </layer>
  <layer id="1" name="fc.weight" type="Const" version="opset1">
   {const}
   <output><port id="0" precision="FP32"><dim>3</dim><dim>2</dim></port></output>
  </layer>
  <layer id="2" name="MatMul_1" type="MatMul" version="opset1">
   <data transpose_a="false" transpose_b="true" />
   <input><port id="0"><dim>1</dim><dim>2</dim></port><port id="1"><dim>3</dim><dim>2</dim></port></input>
   <output><port id="2" precision="FP32"><dim>1</dim><dim>3</dim></port></output>
  </layer>
  <layer id="3" name="out" type="Result" version="opset1">
   <input><port id="0"><dim>1</dim><dim>3</dim></port></input>
  </layer>
 </layers>
 <edges>
  {edges}
 </edges>
</net>
"""


def _laughs() -> str:
    entities = ['<!ENTITY l0 "ha">'] + [f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)]
    return '<?xml version="1.0"?>\n<!DOCTYPE net [\n' + "\n".join(entities) + "\n]>"


CASES: dict[str, tuple[str, bytes | None]] = {  # name -> (XML, .bin or None for none)
    "TruncatedFileError--offset-past-the-bin-end": (ir(CONST.replace('offset="0"', 'offset="8"')), WEIGHTS),
    "TruncatedFileError--bin-cut-short": (ir(), WEIGHTS[:20]),
    "CorruptCheckpointError--size-differs-from-shape": (ir(CONST.replace('size="24"', 'size="20"')), WEIGHTS),
    "UnsupportedFormatError--unknown-element-type": (ir(CONST.replace('"f32"', '"q9"')), WEIGHTS),
    "CheckpointNotFoundError--bin-missing": (ir(), None),
    "RefusedError--billion-laughs": (ir(head=_laughs()).replace('name="tiny"', 'name="&l9;"'), WEIGHTS),
    "RefusedError--external-entity": (
        ir(head='<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/passwd">]>').replace(
            'name="tiny"', 'name="&x;"'
        ),
        WEIGHTS,
    ),
    "RefusedError--parameter-entity-fetching-a-url": (
        ir(head='<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'),
        WEIGHTS,
    ),
    "UnsupportedFormatError--shape-larger-than-numpy-holds": (
        ir(CONST.replace('shape="3, 2"', 'shape="4294967296, 4294967296"').replace('size="24"', f'size="{2**66}"')),
        WEIGHTS,
    ),
    "TruncatedFileError--huge-shape-past-the-bin": (
        ir(CONST.replace('shape="3, 2"', 'shape="65536, 65536"').replace('size="24"', f'size="{2**34}"')),
        WEIGHTS,
    ),
    "CorruptCheckpointError--dynamic-dimension-in-a-const": (ir(CONST.replace('"3, 2"', '"?, 2"')), WEIGHTS),
    "CorruptCheckpointError--negative-offset": (ir(CONST.replace('offset="0"', 'offset="-8"')), WEIGHTS),
    "CorruptCheckpointError--const-without-data": (ir(""), WEIGHTS),
    "CorruptCheckpointError--edges-make-a-cycle": (  # the MatMul's output fed back into its first input
        ir(
            edges=EDGES.replace(
                'from-layer="0" from-port="0" to-layer="2"', 'from-layer="2" from-port="2" to-layer="2"'
            )
        ),
        WEIGHTS,
    ),
    "CorruptCheckpointError--edge-to-a-missing-layer": (
        ir(edges=EDGES.replace('to-layer="3"', 'to-layer="9"')),
        WEIGHTS,
    ),
    "CorruptCheckpointError--edge-to-a-missing-port": (ir(edges=EDGES.replace('to-port="1"', 'to-port="7"')), WEIGHTS),
    "CorruptCheckpointError--two-edges-into-one-port": (ir(edges=EDGES.replace('to-port="1"', 'to-port="0"')), WEIGHTS),
    "CorruptCheckpointError--two-layers-with-one-id": (ir().replace('layer id="3"', 'layer id="2"'), WEIGHTS),
    "CorruptCheckpointError--xml-cut-short": (ir()[:300], WEIGHTS),
    "CorruptCheckpointError--root-is-not-net": (
        ir().replace("<net ", "<model ").replace("</net>", "</model>"),
        WEIGHTS,
    ),
    "UnsupportedFormatError--ir-version-7": (ir(version="7"), WEIGHTS),
    "CorruptCheckpointError--elements-nested-300-deep": (
        ir().replace("<layers>", "<layers>" + "<x>" * 300 + "</x>" * 300, 1),
        WEIGHTS,
    ),
}


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for old in FOLDER.iterdir():
        old.unlink()
    for name, (xml, weights) in CASES.items():
        (FOLDER / f"{name}.xml").write_text(xml)
        if weights is not None:
            (FOLDER / f"{name}.bin").write_bytes(weights)


if __name__ == "__main__":
    main()
