"""`tinyship web`: the browser page, a bundle's web folder and the page's JavaScript, served on 127.0.0.1 by the
standard library's HTTP server, cross-origin isolated so that onnxruntime-web may run threads.

    /                 the page (runtime/web/index.html, app.js)
    /vendor/...       the npm packages the page imports (web/node_modules after `npm ci --ignore-scripts`)
    /models/NAME/...  the bundle's web folder (tinyship export --target web, or tinyship convert --target web)
"""

from __future__ import annotations

import argparse
import functools
import logging
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files as package_files
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import Command
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import PORT

log = logging.getLogger(__name__)

PAGE = Path(str(package_files("tinyship.runtime").joinpath("web")))
MODEL_NAME = "model"
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}


@dataclass
class Site:
    """What the server's paths map to."""

    web_folder: Path
    node_modules: Path

    def file(self, url_path: str) -> Path | None:
        """The file a request path names, None when outside every root (or absent)."""
        path = unquote(urlsplit(url_path).path)
        for prefix, root in ((f"/models/{MODEL_NAME}/", self.web_folder), ("/vendor/", self.node_modules),
                             ("/", PAGE)):
            if path.startswith(prefix):
                rest = path[len(prefix):] or "index.html"
                target = (root / rest).resolve()
                return target if target.is_relative_to(root.resolve()) and target.is_file() else None
        return None


def site(bundle: str | Path, node_modules: str | Path) -> Site:
    """The bundle's web folder and the page's npm packages, or an error saying how to make them."""
    manifest = read_manifest(bundle)
    record = manifest.get("targets", {}).get("web")
    if not record:
        raise TinyshipError(f"{bundle} has no web folder: add it with `tinyship convert {bundle} --target web`")
    node_modules = Path(node_modules)
    if not (node_modules / "@huggingface" / "transformers").is_dir():
        raise TinyshipError(f"no transformers.js in {node_modules}: run `npm ci --ignore-scripts` in the project's "
                            "web/ folder (it pins the packages), or pass --node-modules DIR")
    return Site(Path(bundle) / record["folder"], node_modules)


class Handler(SimpleHTTPRequestHandler):
    """GET and HEAD of the site's files, with the isolation headers and the types the browser insists on."""

    def __init__(self, *args, site: Site, **kwargs):
        self.site = site
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        found = self.site.file(path)
        return str(found) if found else "/nonexistent"

    def guess_type(self, path) -> str:
        return TYPES.get(Path(path).suffix, None) or super().guess_type(path)

    def end_headers(self) -> None:
        for name, value in ISOLATION.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def list_directory(self, path):
        self.send_error(404)

    def log_message(self, format: str, *args) -> None:
        log.debug(format, *args)


def server(bundle: str | Path, node_modules: str | Path, port: int = 8001, host: str = "127.0.0.1"):
    """The HTTP server (not yet serving): call serve_forever(); its server_address says the port (0: any free)."""
    return ThreadingHTTPServer((host, port), functools.partial(Handler, site=site(bundle, node_modules)))


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="a bundle with a web folder (tinyship export --target web, or tinyship "
                                       "convert BUNDLE --target web)")
    parser.add_argument("--node-modules", default="web/node_modules",
                        help="the npm packages the page imports (default: %(default)s, after `npm ci "
                             "--ignore-scripts` in web/)")
    parser.add_argument("--port", type=PORT, default=8001, help="1 to 65535 (default: %(default)s)")


def _run(args: argparse.Namespace) -> None:
    httpd = server(args.bundle, args.node_modules, args.port)
    log.info(f"serving {args.bundle}'s web folder on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


WEB = Command(help="serve the browser page on 127.0.0.1: a bundle's web folder classified in the browser by "
                   "transformers.js (onnxruntime-web, WASM), all files local", configure=_configure, run=_run)
