"""Immich in the real window, against the spec-validated fake Immich server of the test suite: Connect
dialog verdicts, indexing Immich's assets from the Library page, Push (plan, apply, undo) and the
Server page's registration and job buttons."""

from __future__ import annotations

from pathlib import Path

import pytest

from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
from conftest import CLIP_PACK, FACE_PACK
from fake_immich import FakeImmich

FACE_PHOTOS = {"face_recognition/examples/obama.jpg": "Barack Obama", "face_recognition/examples/obama2.jpg": "Barack Obama",
               "face_recognition/examples/biden.jpg": "Joe Biden"}


@pytest.fixture
def immich(photos_dir: Path, cpu_engine):
    server = FakeImmich(photos_dir.parent / "immich" / "immich-openapi-specs.json")
    server.identity = {server.add_asset(photos_dir / rel): who for rel, who in FACE_PHOTOS.items()}
    for asset_id, data in server.previews.items():  # Immich's own faces: same detector, same preview
        for face in cpu_engine.faces(FACE_PACK, data):
            server.add_face(asset_id, tuple(float(v) for v in face.box))
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


def test_connect_dialog_gives_a_clear_verdict(qtbot, tmp_path: Path, models_dir: Path, immich: FakeImmich, monkeypatch) -> None:
    from immich_ml_desktop.ui.connect_dialog import ConnectDialog

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")  # never the real keyring

    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    dialog = ConnectDialog(window.context, window)
    qtbot.addWidget(dialog)
    dialog.url.setText(immich.url)
    dialog.key.setText("wrong-key")
    dialog.test()
    wait_until(qtbot, lambda: dialog.test_button.isEnabled() and dialog.last_verdict)
    assert "key" in dialog.last_verdict.lower() and not dialog.last_verdict.startswith("Connected")

    dialog.key.setText(immich.admin_key)
    dialog.test()
    wait_until(qtbot, lambda: dialog.test_button.isEnabled() and dialog.last_verdict.startswith("Connected"))
    assert "admin key" in dialog.last_verdict and "push people: ok" in dialog.last_verdict
    dialog.save()
    assert window.context.settings.immich_url == immich.url and window.context.immich_key == immich.admin_key


def test_index_immich_review_push_and_undo(qtbot, tmp_path: Path, models_dir: Path, immich: FakeImmich) -> None:
    from immich_ml_desktop.library.people import People

    window = make_window(qtbot, ui_settings(tmp_path, models_dir, immich_url=immich.url), tmp_path / "w.ini")
    context = window.context
    context.immich_key = immich.admin_key
    library = window.page("Library")
    library.immich_button.click()
    wait_until(qtbot, lambda: library.last_summary is not None, timeout=60)
    assert library.last_summary.indexed == 3

    store = context.library()  # the review the user would do on the People page
    people = People(store, FACE_PACK)
    for who in ("Barack Obama", "Joe Biden"):
        largest = []
        for asset in store.assets("immich"):
            faces = store.faces(asset_id=asset.id) if immich.identity[asset.key] == who else []
            if faces:
                largest.append(max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).id)
        people.rename(people.move_faces(largest), who)

    window.show_page("Push")
    push = window.page("Push")
    push.plan_button.click()
    wait_until(qtbot, lambda: push.plan is not None, timeout=30)
    text = push.plan_text.toPlainText()
    assert "Barack Obama: create; 2 faces to assign" in text and immich.people == {}
    assert push.apply_button.isEnabled()
    push.apply_button.click()
    wait_until(qtbot, lambda: "applied" in push.step_label.text(), timeout=30)
    assert sorted(p["name"] for p in immich.people.values()) == ["Barack Obama", "Joe Biden"]

    push.undo_button.click()
    wait_until(qtbot, lambda: "reverted" in push.step_label.text(), timeout=30)
    assert not [p for p in immich.people.values() if p["name"] in ("Barack Obama", "Joe Biden")]


def test_server_page_registers_and_starts_jobs(qtbot, tmp_path: Path, models_dir: Path, immich: FakeImmich) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, immich_url=immich.url, server_port=3999), tmp_path / "w.ini")
    window.context.immich_key = immich.admin_key
    window.show_page("Server")
    page = window.page("Server")
    wait_until(qtbot, page.register_button.isEnabled, timeout=15)  # enabled once the connection is known
    page.register_button.click()
    wait_until(qtbot, lambda: page.immich_label.text().startswith("Registered"), timeout=15)
    urls = immich.config["machineLearning"]["urls"]
    assert urls[0].endswith(":3999") and len(urls) >= 2
    page.jobs_button.click()
    wait_until(qtbot, lambda: page.immich_label.text().startswith("Jobs started"), timeout=15)
    assert "smartSearch:" in page.immich_label.text() and "faceDetection:" in page.immich_label.text()
    assert page.queue_timer.isActive()
    page.refresh_queues()
    wait_until(qtbot, lambda: not page.immich_label.text().startswith("Jobs started"), timeout=15)
    assert "smartSearch:" in page.immich_label.text()
    page.unregister_button.click()
    wait_until(qtbot, lambda: page.immich_label.text().startswith("Unregistered"), timeout=15)
    assert not any(u.endswith(":3999") for u in immich.config["machineLearning"]["urls"])


def test_send_to_immich_answers_its_jobs_from_the_library_and_puts_the_urls_back(
        qtbot, tmp_path: Path, models_dir: Path, immich: FakeImmich) -> None:
    """The window's Send: index from Immich (the answers go into the answer cache), start the server,
    Send to Immich: Immich's workers get every answer from the library, and its ML URLs come back."""
    ml = immich.config["machineLearning"]
    ml["clip"]["modelName"], ml["facialRecognition"]["modelName"] = CLIP_PACK, FACE_PACK
    before = list(ml["urls"])
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, immich_url=immich.url, server_port=port),
                         tmp_path / "w.ini")
    window.context.immich_key = immich.admin_key
    library = window.page("Library")
    library.immich_button.click()
    wait_until(qtbot, lambda: library.last_summary is not None, timeout=60)
    window.show_page("Server")
    page = window.page("Server")
    wait_until(qtbot, lambda: page.send_button.isEnabled())  # once the connection is known
    page.send_button.click()  # no server yet: told to start it, nothing changed in Immich
    wait_until(qtbot, lambda: page.message.isVisible())
    assert "Start the server first" in page.message.text() and immich.config["machineLearning"]["urls"] == before
    page.start_button.click()
    wait_until(qtbot, lambda: page.server is not None, timeout=30)
    wait_until(qtbot, lambda: page.send_button.isEnabled())
    stop = immich.start_ml_workers()
    try:
        page.send_button.click()
        wait_until(qtbot, lambda: page.send_job is None and "Sent:" in page.immich_label.text(), timeout=120)
    finally:
        stop()
    assert f"Sent: {2 * len(FACE_PHOTOS)} answers from the library, 0 computed, 0 errors" in page.immich_label.text()
    assert immich.config["machineLearning"]["urls"] == before
    assert set(immich.ml_answers["smartSearch"]) == set(immich.assets) == set(immich.ml_answers["faceDetection"])
    page.start_button.click()
