"""A real uvicorn server on a free loopback port, in a thread, for the server's tests."""

from __future__ import annotations

import socket
import threading
import time

from tinyship.runtime.server import ServeConfig, uvicorn_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """The app served as `tinyship serve` serves it (same uvicorn settings), stopped the way SIGTERM stops it."""

    def __init__(self, app, config: ServeConfig = ServeConfig()):
        self.port = free_port()
        self.server = uvicorn_server(app, "127.0.0.1", self.port, config, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def stop(self, wait: float = 30) -> float:
        """Stop the server; the seconds it took."""
        start = time.monotonic()
        self.server.should_exit = True
        self.thread.join(wait)
        return time.monotonic() - start

    def __exit__(self, *exc):
        self.stop()


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are to the server and return everything it answers until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)
