"""A loopback HTTP server answering ``Range: bytes=a-b`` from files on disk, in a process of its own.

Run by ``bench_remote.py``: ``range_server.py DIRECTORY`` prints its port, then serves ``DIRECTORY``'s
files (GET and HEAD, each request on a thread) until killed. A range is read from the file at its
offset, as S3 serves it; moto, the S3 server of the tests, reads the whole object for every range
request, which makes any reader by range pay the object's size per request.
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _file(self) -> Path | None:
        file = Path(self.directory) / self.path.split("?", 1)[0].lstrip("/")
        return file if file.is_file() else None

    def do_HEAD(self) -> None:
        file = self._file()
        if file is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(file.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        file = self._file()
        if file is None:
            self.send_error(404)
            return
        size = file.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (0, size) if match is None else (int(match[1]), min(int(match[2] or size - 1) + 1, size))
        self.send_response(200 if match is None else 206)
        if match is not None:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        with open(file, "rb") as handle:
            handle.seek(start)
            left = end - start
            while left:
                chunk = handle.read(min(left, 1 << 20))
                self.wfile.write(chunk)
                left -= len(chunk)


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


def main() -> None:
    server = Server(("127.0.0.1", 0), functools.partial(RangeHandler, directory=sys.argv[1]))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
