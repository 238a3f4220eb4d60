"""Server page of the real window: starts a real ML server, /ping and /predict answer, stop frees the port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx

from _ui_helpers import finish_background_work, make_window, ui_settings  # noqa: F401 - fixture
from conftest import CLIP_PACK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_page_starts_serves_and_stops(qtbot, tmp_path: Path, models_dir: Path) -> None:
    port = _free_port()
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini")
    window.show_page("Server")
    page = window.page("Server")
    page.preload.setChecked(True)
    page.start_button.click()
    qtbot.waitUntil(lambda: page.server is not None, timeout=30000)
    assert page.server.url == f"http://127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in page.url_label.text()
    assert httpx.get(f"{page.server.url}/ping", timeout=5).text == "pong"

    entries = {"clip": {"textual": {"modelName": CLIP_PACK}}}
    answer = httpx.post(f"{page.server.url}/predict", data={"entries": json.dumps(entries), "text": "a dog"}, timeout=30)
    assert answer.status_code == 200 and "clip" in answer.json()
    page.refresh()
    assert page.stat_labels["requests"].text() == "1"
    loaded = [page.models_table.item(r, 0).text() for r in range(page.models_table.rowCount())]
    assert CLIP_PACK in loaded
    assert page.routes_table.rowCount() > 0

    page.start_button.click()
    qtbot.waitUntil(lambda: page.start_button.isEnabled() and "Start" in page.start_button.text(), timeout=15000)
    try:
        httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)
        raise AssertionError("server still answers after Stop")
    except httpx.ConnectError:
        pass


def test_server_page_reports_a_busy_port_in_place(qtbot, tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini")
        window.show_page("Server")
        page = window.page("Server")
        page.start_button.click()
        qtbot.waitUntil(lambda: page.message.isVisible(), timeout=20000)
    assert str(port) in page.message.text()
    assert page.server is None and "Start" in page.start_button.text()
