"""A 1 GiB TensorFlow checkpoint on a loopback S3 server: what listing it and reading one tensor transfer.

Run from the repository root::

    .venv/bin/python bench/bench_remote.py [--workdir DIR] [--keep] [--quick] [--mib N]

The checkpoint (``--mib`` MiB, 1024 by default: 255 tensors of 4 MiB and 256 of 4 KiB)
is written with ``weightscope.save`` under /tmp (or ``--workdir``) and uploaded to a
moto S3 server on 127.0.0.1 (``moto[server]``, a test dependency). weightscope then opens
``s3://bench/ckpt``, lists it and reads one 4 MiB tensor, counting the bytes its store
fetched. Issue 9's target: listing plus that read transfer less than the index + 4 MiB +
1 MiB. For scale, the time of each step and the rate of a 4 MiB read over loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import benchlib
import numpy as np
from benchlib import MIB, Report, Row

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
        prefix = make_input(workdir, args.mib * MIB)
        index_size = Path(f"{prefix}.index").stat().st_size
        data_size = Path(f"{prefix}.data-00000-of-00001").stat().st_size
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "use_listings_cache": False}
            import s3fs

            uploader = s3fs.S3FileSystem(skip_instance_cache=True, **options)
            uploader.mkdir(BUCKET)
            for file in sorted(workdir.iterdir()):
                uploader.put_file(str(file), f"{BUCKET}/{file.name}")
            start = time.perf_counter()
            with ws.open(f"s3://{BUCKET}/ckpt", storage_options=options) as ckpt:
                names = list(ckpt)
                listed_at, listed = time.perf_counter() - start, ckpt.path.store.bytes_fetched
                start = time.perf_counter()
                middle = args.mib // 8  # a 4 MiB kernel from the middle of the data file
                tensor = ckpt[f"block{middle:03d}/kernel"]
                read_at, total = time.perf_counter() - start, ckpt.path.store.bytes_fetched
            same = tensor.nbytes == 4 * MIB and bool((tensor == middle).all())
        finally:
            server.stop()
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
        benchlib.print_report(
            report,
            title="weightscope on a loopback S3 server",
            quick=args.quick,
            versions=f"weightscope {ws.__version__}",
            repetitions="one run (the byte count does not vary);",
            baseline="target",
        )
    return 1 if report.failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="a 64 MiB checkpoint")
    parser.add_argument("--mib", type=int, help="checkpoint size in MiB (1024; quick 64)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 1024)
    if args.mib < 8:
        parser.error("--mib must be at least 8")
    return args


if __name__ == "__main__":
    sys.exit(main())
