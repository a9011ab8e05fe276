"""Headless Chromium driven over the Chrome DevTools Protocol, for browser tests of pages the
package serves on 127.0.0.1 (Debian's chromium, installed by scripts/setup.sh)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
# software WebGL (no GPU here), and no connections to Google's hosts (this network refuses them)
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--hide-scrollbars', '--mute-audio')
CALL_TIMEOUT_S = 60.0  # one DevTools call (a screenshot of a software-rendered page included)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class HeadlessPage:
    """One page of a headless Chromium (width x height CSS px, scale 1); a context manager that
    kills the browser on exit. The page stays open between screenshots, so a live page (a 3D
    view fed over a websocket) is captured as it goes on, not loaded afresh each time."""

    def __init__(self, width: int = 960, height: int = 640) -> None:
        port = free_port()
        self._profile = tempfile.mkdtemp(prefix='fourd-chromium-')
        self._proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f'--user-data-dir={self._profile}',
             f'--remote-debugging-port={port}', f'--window-size={width},{height}',
             'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._counter = 0
        try:
            self._ws = connect(_first_page(port)['webSocketDebuggerUrl'], max_size=None)
            self._call('Emulation.setDeviceMetricsOverride', width=width, height=height,
                       deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def open(self, url: str) -> None:
        self._call('Page.navigate', url=url)

    def screenshot(self, out: Path) -> Path:
        """Write a PNG of the page as it is now to `out`."""
        data = self._call('Page.captureScreenshot', format='png')
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data['data']))
        return out

    def close(self) -> None:
        if getattr(self, '_ws', None) is not None:
            self._ws.close()
        self._proc.kill()
        self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> HeadlessPage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, **params) -> dict:
        self._counter += 1
        self._ws.send(json.dumps({'id': self._counter, 'method': method, 'params': params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            msg = json.loads(self._ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if msg.get('id') == self._counter:
                if 'error' in msg:
                    raise RuntimeError(f'{method}: {msg["error"]}')
                return msg['result']


def screenshot(url: str, out: Path, width: int = 960, height: int = 640,
               settle_s: float = 6.0) -> Path:
    """Open `url` in a fresh headless page, wait `settle_s` for it to connect and render, and
    write a PNG screenshot to `out`."""
    with HeadlessPage(width, height) as page:
        page.open(url)
        time.sleep(settle_s)
        return page.screenshot(out)


def _first_page(port: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/json', timeout=2) as r:
                pages = [t for t in json.load(r) if t['type'] == 'page']
            if pages:
                return pages[0]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f'{CHROMIUM} did not open its DevTools port {port}')
        time.sleep(0.1)
