"""Headless Chromium driven over the Chrome DevTools Protocol, for browser tests of pages the
package serves on 127.0.0.1 (Debian's chromium, installed by scripts/setup.sh)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
# software WebGL (no GPU here), and no connections to Google's hosts (this network refuses them)
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--hide-scrollbars', '--mute-audio')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def screenshot(url: str, out: Path, width: int = 960, height: int = 640,
               settle_s: float = 6.0) -> Path:
    """Open `url` in headless Chromium (width x height CSS px, scale 1), wait `settle_s` for the
    page to connect and render, and write a PNG screenshot to `out`."""
    return asyncio.run(_screenshot(url, Path(out), width, height, settle_s))


async def _screenshot(url: str, out: Path, width: int, height: int, settle_s: float) -> Path:
    port = free_port()
    profile = tempfile.mkdtemp(prefix='fourd-chromium-')
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f'--user-data-dir={profile}',
                             f'--remote-debugging-port={port}', f'--window-size={width},{height}',
                             'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = _first_page(port)
        async with websockets.connect(page['webSocketDebuggerUrl'], max_size=None) as ws:
            counter = 0

            async def call(method: str, **params) -> dict:
                nonlocal counter
                counter += 1
                await ws.send(json.dumps({'id': counter, 'method': method, 'params': params}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
                    if msg.get('id') == counter:
                        if 'error' in msg:
                            raise RuntimeError(f'{method}: {msg["error"]}')
                        return msg['result']

            await call('Emulation.setDeviceMetricsOverride', width=width, height=height,
                       deviceScaleFactor=1, mobile=False)
            await call('Page.navigate', url=url)
            await asyncio.sleep(settle_s)
            data = await call('Page.captureScreenshot', format='png')
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data['data']))
        return out
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


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
