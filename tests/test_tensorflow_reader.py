"""Reading TensorFlow-made checkpoints: every tensor equals what TensorFlow's reader returns."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_tensor
from tf_fixtures import tf_reader_values

import weightscope as ws
from weightscope import compat

FIXTURES = ["seed", "dtypes", "sharded", "many", "partitioned", "history"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_tensor_equals_tensorflow(tf_checkpoints: dict[str, Path], fixture: str) -> None:
    path = tf_checkpoints[fixture]
    expected = tf_reader_values(path)
    with ws.open(path) as ckpt:
        assert ckpt.format == "tensorflow"
        assert sorted(info.key for info in ckpt.infos()) == sorted(expected)
        for key, value in expected.items():
            assert_same_tensor(ckpt[key], value)
            assert ckpt.info(key).shape == np.shape(value)


def test_names_are_in_tensorflow_order(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["many"]) as ckpt:
        names = list(ckpt)
    assert names == sorted(names, key=lambda name: name.encode())
    assert len(names) == 3000


def test_every_path_form_opens_the_same_checkpoint(tf_checkpoints: dict[str, Path]) -> None:
    prefix = tf_checkpoints["seed"]
    forms = [
        prefix,
        Path(f"{prefix}.index"),
        Path(f"{prefix}.data-00000-of-00001"),
        prefix.parent,
        prefix.parent / "checkpoint",
    ]
    for form in forms:
        with ws.open(form) as ckpt:
            assert ckpt.path == prefix, form


def test_directory_uses_the_newest_checkpoint(tf_checkpoints: dict[str, Path]) -> None:
    directory = tf_checkpoints["history"]
    with ws.open(directory) as ckpt:
        assert ckpt.path.name.endswith("-30")


def test_copied_directory_opens_its_own_files(seed_copy: Path) -> None:
    # TF1's Saver records absolute paths in the state file; they name the original.
    state = (seed_copy.parent / "checkpoint").read_text()
    assert 'model_checkpoint_path: "/' in state and str(seed_copy.parent) not in state
    with ws.open(seed_copy.parent) as ckpt:
        assert ckpt.path == seed_copy


def test_directory_without_state_file_and_one_prefix(tf_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    prefix = tf_checkpoints["seed"]
    for path in prefix.parent.iterdir():
        if path.name != "checkpoint":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with ws.open(tmp_path) as ckpt:
        assert ckpt.path == tmp_path / prefix.name


def test_tensor_info_answers_from_the_index(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        info = ckpt.info("layer1/kernel")
    assert (info.name, info.dtype, info.shape, info.nbytes) == ("layer1/kernel", np.dtype("float32"), (2, 5), 40)
    assert info.file.endswith("model.ckpt.data-00000-of-00001")


def test_arrays_are_read_only_views(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        kernel = ckpt["layer1/kernel"]
    assert not kernel.flags.writeable
    assert not kernel.flags.owndata
    assert kernel.sum() == pytest.approx(float(np.asarray(kernel, dtype=np.float64).sum()))  # usable after close


def test_weight_is_called_kernel(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        with pytest.raises(ws.TensorNotFoundError, match="kernel") as caught:
            ckpt["layer1/weight"]
        assert isinstance(caught.value, KeyError)
        assert "did you mean 'layer1/kernel'" in str(caught.value)
        assert ckpt.resolve("layer1/weight") == "layer1/kernel"
        assert ckpt.resolve("layer2/bias") == "layer2/bias"


def test_layers_attach_optimizer_state(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        layers = ckpt.layers()
    assert list(layers) == ["layer1", "layer2"]
    layer1 = layers["layer1"]
    assert layer1.weight is not None and layer1.weight.name == "layer1/kernel"
    assert layer1.bias is not None and layer1.bias.name == "layer1/bias"
    assert layer1.parameter_count == 15
    assert {slot: info.name for slot, info in layer1.optimizer_state["layer1/kernel"].items()} == {
        "m": "layer1/kernel/Adam",
        "v": "layer1/kernel/Adam_1",
    }
    for name in ("beta1_power", "beta2_power"):
        role = ws.layers.classify(name)
        assert (role.kind, role.role) == ("optimizer", name)


def test_verification_can_be_turned_off(seed_copy: Path) -> None:
    with ws.open(seed_copy) as ckpt:
        info = ckpt.info("layer1/kernel")
    data = Path(info.file)
    raw = bytearray(data.read_bytes())
    raw[info.offset] ^= 0x01
    data.write_bytes(raw)
    with ws.open(seed_copy) as ckpt, pytest.raises(ws.ChecksumMismatchError, match="layer1/kernel"):
        ckpt["layer1/kernel"]
    with ws.open(seed_copy, verify=False) as ckpt:
        assert ckpt["layer1/kernel"].shape == (2, 5)


def test_compat_reader_matches_tensorflow(tf_checkpoints: dict[str, Path]) -> None:
    import tensorflow as tf

    for fixture in ("seed", "dtypes", "partitioned"):
        path = str(tf_checkpoints[fixture])
        theirs = tf.train.load_checkpoint(path)
        ours = compat.load_checkpoint(path)
        assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
        real_dtypes = theirs.get_variable_to_dtype_map()
        for name, dtype in ours.get_variable_to_dtype_map().items():
            real = real_dtypes[name]
            # TF gives quantized types as structured numpy dtypes; we give the integers.
            expected = np.dtype(real.as_numpy_dtype)
            assert dtype.itemsize == expected.itemsize if real.is_quantized else dtype == expected
        for name in theirs.get_variable_to_shape_map():
            mine, real = ours.get_tensor(name), theirs.get_tensor(name)
            assert type(mine) is type(real) or isinstance(real, np.ndarray)
            assert_same_tensor(np.asarray(mine), real)
            assert ours.has_tensor(name) and theirs.has_tensor(name)
        assert compat.list_variables(path) == tf.train.list_variables(path)
    prefix = str(tf_checkpoints["seed"])
    assert_same_tensor(compat.load_variable(prefix, "layer1/kernel:0"), tf.train.load_variable(prefix, "layer1/kernel"))
    assert not compat.NewCheckpointReader(prefix).has_tensor("layer1/weight")


SEED_READER = """
import sys
{import_line}
save_path = sys.argv[1]
reader = {reader}(save_path)
weights = reader.get_tensor('layer1' + '/kernel')
bias = reader.get_tensor('layer1' + '/bias')
print(weights)
print(bias)
var_to_shape_map = reader.get_variable_to_shape_map()
for key in sorted(var_to_shape_map):
    print("tensor name: ", key)
    print(reader.get_tensor(key))
"""


def test_seed_program_prints_the_same_with_compat(tf_checkpoints: dict[str, Path]) -> None:
    prefix = str(tf_checkpoints["seed"])

    def run(import_line: str, reader: str) -> str:
        program = SEED_READER.format(import_line=import_line, reader=reader)
        result = subprocess.run([sys.executable, "-c", program, prefix], capture_output=True, text=True, check=True)
        return result.stdout

    ours = run("import weightscope.compat", "weightscope.compat.NewCheckpointReader")
    theirs = run("import tensorflow as tf", "tf.compat.v1.train.NewCheckpointReader")
    assert ours == theirs
    assert "[[" in ours and "tensor name:  layer2/kernel/Adam_1" in ours


def test_listing_never_touches_the_data_files(tf_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import mmap

    mapped: list[str] = []
    real_mmap = mmap.mmap

    def recording_mmap(fileno: int, *args: object, **kwargs: object) -> mmap.mmap:
        mapped.append(os.readlink(f"/proc/self/fd/{fileno}"))
        return real_mmap(fileno, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mmap, "mmap", recording_mmap)
    # (A TF2 checkpoint's listing reads one tensor, its object graph, for the names.)
    for fixture in ("seed", "many", "partitioned"):
        with ws.open(tf_checkpoints[fixture]) as ckpt:
            assert [info.shape for info in ckpt.infos()]
            ckpt.layers()
    assert mapped == []  # (nor the index: read whole at once, as TensorFlow reads it)
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        ckpt["layer1/kernel"]
    assert mapped[-1].endswith(".data-00000-of-00001")


def test_big_endian_bundle_reads_in_native_order(tmp_path: Path) -> None:
    from weightscope import _proto
    from weightscope._crc32c import crc32c
    from weightscope.containers.table import build_table, iter_table, mask_crc
    from weightscope.sources import FileSource

    values = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64), "c": np.float64(3.5)}
    prefix = ws.save(values, tmp_path / "model.ckpt")
    # Rewrite it as a big-endian machine would have: tensor bytes swapped, header saying BIG.
    data_path = Path(f"{prefix}.data-00000-of-00001")
    data = bytearray(data_path.read_bytes())
    entries = list(iter_table(FileSource(f"{prefix}.index")))
    header = _proto.BundleHeaderProto.FromString(entries[0][1])
    header.endianness = 1
    rebuilt = [(b"", header.SerializeToString())]
    for key, raw in entries[1:]:
        entry = _proto.BundleEntryProto.FromString(raw)
        array = values[key.decode()]
        swapped = np.asarray(array).astype(np.asarray(array).dtype.newbyteorder(">")).tobytes()
        data[entry.offset : entry.offset + entry.size] = swapped
        entry.crc32c = mask_crc(crc32c(swapped))
        rebuilt.append((key, entry.SerializeToString()))
    data_path.write_bytes(data)
    Path(f"{prefix}.index").write_bytes(build_table(rebuilt))
    with ws.open(prefix) as ckpt:
        for name, value in values.items():
            assert ckpt[name].dtype == np.asarray(value).dtype
            np.testing.assert_array_equal(ckpt[name], value)
        assert not ckpt.verify()


@pytest.mark.parametrize(
    "text",
    [
        'model_checkpoint_path: "model.ckpt-30"\nall_model_checkpoint_paths: "model.ckpt-10"\n'
        'all_model_checkpoint_paths: "model.ckpt-30"\nall_model_checkpoint_timestamps: 1795710709.8241646\n'
        "all_model_checkpoint_timestamps: 1.7e9\nlast_preserved_timestamp: 1795710000.5\n",
        'model_checkpoint_path: "dir \\"q\\"/caf\\303\\251\\\\x\\n"\n',
        "model_checkpoint_path: 'single quoted, which only protobuf reads'\n",
        'model_checkpoint_path: "a" # a comment\n',
        "",
    ],
    ids=["tensorflow's lines", "escapes", "single quotes", "comment", "empty"],
)
def test_checkpoint_state_is_read_as_protobuf_reads_it(tmp_path: Path, text: str) -> None:
    from weightscope.formats.tf_state import _parse_checkpoint_state, read_checkpoint_state

    (tmp_path / "checkpoint").write_text(text, encoding="utf-8")
    assert read_checkpoint_state(tmp_path) == _parse_checkpoint_state(text, tmp_path / "checkpoint")


def test_checkpoint_state_with_an_unknown_field_is_corrupt(tmp_path: Path) -> None:
    from weightscope.formats.tf_state import read_checkpoint_state

    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "a"\nnonsense: 3\n', encoding="utf-8")
    with pytest.raises(ws.CorruptCheckpointError, match="not a CheckpointState"):
        read_checkpoint_state(tmp_path)


def test_listing_a_directory_imports_neither_protobuf_nor_numpy_ma(seed_copy: Path) -> None:
    code = "import sys; from weightscope.cli import main; main(['ls', sys.argv[1]]); print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code, str(seed_copy.parent)], capture_output=True, text=True)
    assert result.returncode == 0 and "layer1/kernel" in result.stdout
    modules = set(ast.literal_eval(result.stdout.splitlines()[-1]))
    assert "weightscope.formats.tensorflow" in modules
    assert not modules & {"google.protobuf", "numpy.ma"}


def test_showing_a_tensor_imports_no_other_command(seed_copy: Path) -> None:
    """``show`` starts on the modules it runs: the root's commands are imported when named (issue 22)."""
    code = (
        "import sys; from weightscope.cli import main; main(['show', sys.argv[1], 'layer1/kernel']); "
        "print(sorted(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(seed_copy)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("[["), result.stderr
    modules = set(ast.literal_eval(result.stdout.splitlines()[-1]))
    assert "weightscope.cli.inspect" in modules
    commands = ("compare", "convert", "hashing", "meta", "runs", "serve", "anatomy")
    others = {f"weightscope.cli.{name}" for name in commands}
    # the other commands', and what only a mistyped name (difflib) or a pre-0.4 PyTorch tar (tarfile) needs
    assert not modules & (others | {"weightscope.manifest", "difflib", "tarfile", "google.protobuf"})
    # and what only other work needs: checksums on threads (concurrent.futures, with logging), writing files
    # (weightscope.atomic: shutil, tempfile), zip members (zlib_ng, gzip), JSON, notebooks, an error's stack
    unneeded = {"concurrent.futures", "logging", "weightscope.atomic", "shutil", "tempfile", "zlib_ng", "gzip"}
    assert not modules & (unneeded | {"json", "weightscope.notebook", "html", "traceback"})
    assert not modules & {"weightscope.layers", "weightscope.conventions"}  # roles: a name is given as found
    # what only other formats, other checkpoints or completion need (issue 22): zips and their sniffers, model
    # folders' file patterns, TF2's object graph (a TF1 checkpoint has none), partitioned variables' slice keys,
    # a glob over the registry's entry points, click's completion classes
    others_only = {
        "weightscope.containers.zip",
        "weightscope.formats._torch_kind",
        "weightscope.formats._folder_choice",
    }
    others_only |= {"weightscope.formats.tf_object_graph", "weightscope.formats._ordered_code"}
    assert not modules & (others_only | {"glob", "click.shell_completion"})
