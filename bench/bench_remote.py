"""A 1 GiB TensorFlow checkpoint on a loopback S3 server: what listing it and reading one tensor transfer.

Run from the repository root::

    .venv/bin/python bench/bench_remote.py [--workdir DIR] [--keep] [--quick] [--mib N]

The checkpoint (``--mib`` MiB, 1024 by default: 255 tensors of 4 MiB and 256 of 4 KiB)
is written with ``weightscope.save`` under /tmp (or ``--workdir``) and uploaded to a
moto S3 server on 127.0.0.1 (``moto[server]``, a test dependency). weightscope then opens
``s3://bench/ckpt``, lists it and reads one 4 MiB tensor, counting the bytes its store
fetched. Issue 9's target: listing plus that read transfer less than the index + 4 MiB +
1 MiB. For scale, the time of each step and the rate of a 4 MiB read over loopback.

Then every tensor is read (``ckpt.arrays()``: ``IN_FLIGHT`` range requests at once, each exactly a
tensor) against fsspec's own ``cat`` of the same objects (each object in one request), interleaved,
``--reps`` rounds, both the throughput and the bytes moved. Issue 22's target: at least cat's
throughput. Twice: from a loopback HTTP server in a process of its own that reads each range at its
offset (``range_server.py``, as S3 serves ranges), over the whole checkpoint; and from moto, whose
server reads the whole object for every range request (``FakeKey.value``, under the key's lock), on
a smaller checkpoint of the same layout (``--s3-read-mib``): there each request costs the object's size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from benchlib import MIB, Report, Row, Samples, interleave, rate_figure

import weightscope as ws

BUCKET = "bench"


def make_input(workdir: Path, total_bytes: int) -> Path:
    big = total_bytes // (4 * MIB) - 1
    tensors = {f"block{i:03d}/kernel": np.full(MIB, i, np.float32) for i in range(big)}
    tensors.update({f"block{i:03d}/bias": np.full(1024, i, np.float32) for i in range(big + 1)})
    return ws.save(tensors, workdir / "ckpt")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    from moto import server as moto_server

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with benchlib.work_directory(args, "weightscope-bench-remote-", report) as workdir:
        prefix = make_input(workdir / "big", args.mib * MIB)
        smaller = make_input(workdir / "smaller", args.s3_read_mib * MIB)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "use_listings_cache": False}
            import s3fs

            # Under load moto took over a minute to store a 1 GiB object: botocore's 60 s read timeout then sent
            # the upload again, over the one being stored (moto closed its buffer under it: a 500, then gigabytes).
            uploader = s3fs.S3FileSystem(
                skip_instance_cache=True, config_kwargs={"read_timeout": 900, "retries": {"max_attempts": 1}}, **options
            )
            uploader.mkdir(BUCKET)
            for file in sorted(workdir.rglob("*")):
                if file.is_file():
                    uploader.put_file(str(file), f"{BUCKET}/{file.relative_to(workdir)}")
            list_and_read_one(args, prefix, options, report)
            print(f"reading every tensor from moto ({args.s3_read_mib} MiB) ...", flush=True)
            compare_read_all(
                f"moto S3, {args.s3_read_mib} MiB",
                f"s3://{BUCKET}/smaller/ckpt",
                {"storage_options": options},
                lambda: s3fs.S3FileSystem(skip_instance_cache=True, **options),
                [f"{BUCKET}/smaller/{file.name}" for file in sorted(smaller.parent.glob("ckpt.*"))],
                args.reps,
                report,
            )
        finally:
            server.stop()
        print(f"reading every tensor from a loopback HTTP range server ({args.mib} MiB) ...", flush=True)
        with range_server(workdir / "big") as root:
            import fsspec

            compare_read_all(
                f"HTTP range server, {args.mib} MiB",
                f"{root}/ckpt",
                {},
                lambda: fsspec.filesystem("http", skip_instance_cache=True),
                [f"{root}/{file.name}" for file in sorted(prefix.parent.glob("ckpt.*"))],
                args.reps,
                report,
            )
        benchlib.print_report(
            report,
            title="weightscope on loopback servers (S3: moto; HTTP: ranges read at their offset)",
            quick=args.quick,
            versions=f"weightscope {ws.__version__}",
            repetitions=f"one run for the byte count (it does not vary); {args.reps} rounds of reading all;",
            baseline="target / fsspec cat",
        )
    return 1 if report.failed else 0


def list_and_read_one(args: argparse.Namespace, prefix: Path, options: dict[str, Any], report: Report) -> None:
    """Issue 9's row: ``ls`` and one 4 MiB tensor of the large checkpoint, the bytes the store fetched."""
    index_size = Path(f"{prefix}.index").stat().st_size
    data_size = Path(f"{prefix}.data-00000-of-00001").stat().st_size
    start = time.perf_counter()
    with ws.open(f"s3://{BUCKET}/big/ckpt", storage_options=options) as ckpt:
        names = list(ckpt)
        listed_at, listed = time.perf_counter() - start, ckpt.path.store.bytes_fetched
        start = time.perf_counter()
        middle = args.mib // 8  # a 4 MiB kernel from the middle of the data file
        tensor = ckpt[f"block{middle:03d}/kernel"]
        read_at, total = time.perf_counter() - start, ckpt.path.store.bytes_fetched
    same = tensor.nbytes == 4 * MIB and bool((tensor == middle).all())
    limit = index_size + 5 * MIB
    report.rows.append(
        Row(f"{data_size / MIB:.0f} MiB on S3: ls + one 4 MiB tensor, bytes fetched", f"limit {limit:,} B",
            f"{total:,} B", limit / total, f"{limit / total:.2f}x under", 1)
    )  # fmt: skip
    report.context.append(
        f"{len(names)} tensors; the index is {index_size:,} B; "
        f"ls fetched {listed:,} B in {listed_at * 1000:.0f} ms; "
        f"the tensor {total - listed:,} B in {read_at * 1000:.0f} ms "
        f"({4 / read_at:.0f} MiB/s over loopback from moto)"
    )
    report.check(same, f"the tensor read from S3 {'holds' if same else 'does not hold'} the values written")


def compare_read_all(
    label: str,
    url: str,
    open_options: dict[str, Any],
    filesystem: Callable[[], Any],
    objects: list[str],
    reps: int,
    report: Report,
) -> None:
    """Every tensor through ``ckpt.arrays()`` against fsspec's ``cat`` of the checkpoint's objects."""
    moved: dict[str, int] = {}

    def cat() -> None:
        moved["cat"] = sum(map(len, filesystem().cat(objects).values()))

    def read_all() -> None:
        with ws.open(url, **open_options) as ckpt:
            moved["tensors"] = sum(array.nbytes for _, array in ckpt.arrays())
            moved["weightscope"] = ckpt.path.store.bytes_fetched

    cat_times, ws_times = interleave([cat, read_all], reps)
    ratio = cat_times.median / ws_times.median
    nbytes = moved["cat"]
    report.rows.append(
        Row(f"{label}: read every tensor (arrays()) vs cat of the objects", rate_figure(nbytes, cat_times),
            rate_figure(nbytes, ws_times), ratio, f"{ratio:.2f}x throughput", 1)
    )  # fmt: skip
    report.context.append(f"{label}: {spread(cat_times)} (cat), {spread(ws_times)} (weightscope), seconds")
    exact = moved["weightscope"] == nbytes
    report.check(
        exact,
        f"{label}: weightscope fetched {moved['weightscope']:,} B for {moved['tensors']:,} B of tensors "
        f"(cat: {nbytes:,} B, the index and the data file)",
    )


def spread(samples: Samples) -> str:
    return "–".join(f"{value:.2f}" for value in (min(samples.values), samples.median, max(samples.values)))


@contextlib.contextmanager
def range_server(directory: Path) -> Iterator[str]:
    """``range_server.py`` serving ``directory`` in a child process, for the block; its root URL."""
    script = Path(__file__).with_name("range_server.py")
    process = subprocess.Popen([sys.executable, str(script), str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.kill()
        process.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="a 64 MiB checkpoint")
    parser.add_argument("--mib", type=int, help="checkpoint size in MiB (1024; quick 64)")
    parser.add_argument("--s3-read-mib", type=int, help="checkpoint read whole from moto, MiB (128; quick 16)")
    parser.add_argument("--reps", type=int, default=3, help="rounds of reading every tensor (3)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 1024)
    args.s3_read_mib = args.s3_read_mib or (16 if args.quick else 128)
    if min(args.mib, args.s3_read_mib) < 8 or args.reps < 1:
        parser.error("--mib and --s3-read-mib must be at least 8, --reps at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
