"""Server page of the real window: starts a real ML server, /ping and /predict answer, stop frees the port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx

from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
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
    served_by = {page.routes_table.item(r, 0).text(): page.routes_table.item(r, 3).text()
                 for r in range(page.routes_table.rowCount())}
    assert served_by["CLIP image"] == "ClipVisualEncoder" and served_by["face detection"] == "FaceDetector"

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


def test_busy_port_is_explained_in_the_windows_words(qtbot, tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini")
        window.show_page("Server")
        page = window.page("Server")
        page.start_button.click()
        qtbot.waitUntil(lambda: page.message.isVisible(), timeout=20000)
    text = page.message.text()
    assert "choose another Port on the Server page" in text and "--port" not in text


def test_tasks_show_missing_models_where_they_come_from_and_download_them(qtbot, tmp_path: Path, models_dir: Path,
                                                                          monkeypatch) -> None:
    """CLIP not on disk (Immich's ViT-B-32__openai) and OCR not on disk: each row says so and where its
    files come from; downloading the CLIP row fetches it from the hub (a local one here)."""
    from tests._hub_server import LocalHub

    with LocalHub() as hub:
        hub.add_repo("immich-app/ViT-B-32__openai", models_dir / "clip" / CLIP_PACK)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        cache = tmp_path / "models"
        (cache / "facial-recognition").mkdir(parents=True)
        (cache / "facial-recognition" / "test-scrfd25g-r512").symlink_to(models_dir / "facial-recognition" / "test-scrfd25g-r512")
        settings = ui_settings(tmp_path, cache, clip_model="ViT-B-32__openai", allow_downloads=False)
        window = make_window(qtbot, settings, tmp_path / "w.ini")
        window.show_page("Server")
        page = window.page("Server")
        wait_until(qtbot, lambda: page.routes_table.rowCount() == 6 and page.task_rows, timeout=30)
        rows = {(r.task, r.model_type): r for r in page.task_rows}
        assert not rows[("clip", "visual")].present and rows[("clip", "visual")].source.endswith(
            "/immich-app/ViT-B-32__openai") and "127.0.0.1" in rows[("clip", "visual")].source
        assert rows[("facial-recognition", "detection")].present
        ocr = rows[("ocr", "detection")]
        assert ocr.model == "PP-OCRv5_mobile" and not ocr.present
        assert ocr.source == "www.modelscope.cn"  # RapidOCR's host, not Hugging Face
        here = {page.routes_table.item(r, 0).text(): page.routes_table.item(r, 2) for r in range(6)}
        assert here["OCR detection"].text() == "missing"
        assert here["OCR detection"].toolTip().startswith("Missing: requests fail until it is downloaded")
        assert here["face detection"].text() == "on this machine"
        assert page.fetch_button.isVisible() and "PP-OCRv5_mobile (from www.modelscope.cn)" in page.missing_label.text()

        clip_row = next(r for r in range(6) if page.routes_table.item(r, 0).text() == "CLIP image")
        page.routes_table.itemActivated.emit(page.routes_table.item(clip_row, 1))  # Enter on the row
        wait_until(qtbot, lambda: any(r.task == "clip" and r.present for r in page.task_rows), timeout=60)
        assert (cache / "clip" / "ViT-B-32__openai" / "visual" / "model.onnx").is_file()
        assert "ViT-B-32__openai" not in page.missing_label.text() and "PP-OCRv5_mobile" in page.missing_label.text()


def test_immich_buttons_wait_for_a_connection(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    window.show_page("Server")
    page = window.page("Server")
    qtbot.wait(200)
    buttons = (page.register_button, page.unregister_button, page.jobs_button)
    assert not any(b.isEnabled() for b in buttons) and "Connect" in page.immich_label.text()
    window.context.immich_key = "a-key"
    window.context.apply_settings(window.context.updated_settings(immich_url="http://127.0.0.1:9"))
    wait_until(qtbot, lambda: all(b.isEnabled() for b in buttons))
    assert page.immich_label.text() == "Connected to http://127.0.0.1:9."


def test_the_idle_column_is_not_clipped(qtbot, tmp_path: Path, models_dir: Path) -> None:
    port = _free_port()
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini")
    window.resize(900, 640)  # a small window: the tables share its width
    window.show_page("Server")
    page = window.page("Server")
    page.preload.setChecked(True)
    page.start_button.click()
    qtbot.waitUntil(lambda: page.server is not None, timeout=30000)
    page.refresh()
    qtbot.wait(50)
    table = page.models_table
    header = table.horizontalHeader()
    assert table.rowCount() >= 2
    idle = table.columnCount() - 1
    assert header.sectionViewportPosition(idle) + header.sectionSize(idle) <= table.viewport().width()
    text_width = table.fontMetrics().horizontalAdvance(table.item(0, idle).text())
    assert header.sectionSize(idle) >= text_width
    assert not table.horizontalScrollBar().isVisible()
    page.start_button.click()
    qtbot.waitUntil(lambda: page.start_button.isEnabled() and page.server is None, timeout=15000)


def test_an_address_not_of_this_machine_is_explained_in_the_windows_words(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_host="10.99.99.99", server_port=0),
                         tmp_path / "w.ini")
    window.show_page("Server")
    page = window.page("Server")
    page.start_button.click()
    qtbot.waitUntil(lambda: page.message.isVisible(), timeout=20000)
    text = page.message.text()
    assert "not an address of this machine" in text and "as Host on the Server page" in text and "--host" not in text
