"""Biometric data (issue 12): a face used for a portrait leaves no trace once its job ends.

A real accounts-mode server (as ``obscura serve`` starts one, in this process so that the test
can see its spool and logs) with the demo SD model and tiny working portrait files
(tests/portrait_files.py). A portrait job goes through the API: an IP-Adapter Plus-Face unit
whose reference is a face photo, cropped to the face (``obscura_crop_face``). The reference is
made unique to this run (invisible noise on the public-domain astronaut), so that its bytes,
its pixels and its face crop — recomputed here with :func:`core.faces.crop_face`, as the job
computes it — can be searched for anywhere: the data directory (spool, gallery, audit log), the
RAM folder, the server's temp folder and the machine's temp folder. The same after a job that
fails midway (right after the crop was made) and one that is cancelled. ``obscura audit``'s
checks (:func:`privacy.audit.run_audit`) stay clean and the log holds nothing face-derived.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import core.faces
from core.faces import crop_face, find_faces
from privacy.audit import AuditSettings, run_audit
from privacy.inventory import PORTRAIT_FLOWS, STORES
from privacy.scrub import scrub
from tests.webui.test_api import SD, Member, Running, member, start_server
from tests.webui.test_api_controlnet import FACE, IP_ADAPTER, build_portrait_library
from webui.run import pictures_in

PROMPT = "a watercolour portrait of a secretive otter"
BIG_FILE = 64 * 1024 * 1024  # temp files larger than this are model copies, not looked into


# -- the unique face ---------------------------------------------------------------------------
def unique_face() -> Image.Image:
    """The astronaut with ±1 noise of this run's own: a picture no other test has."""
    with Image.open(FACE) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    noise = np.random.default_rng(int.from_bytes(os.urandom(8), "big")).integers(
        -1, 2, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Face:
    """The reference as sent and everything the job derives from it, as needles to look for."""

    def __init__(self) -> None:
        self.sent = png(unique_face())
        self.b64 = base64.b64encode(self.sent).decode()
        clean = scrub(self.sent, max_bytes=len(self.sent) + 1, max_pixels=10**7, mode="RGB")
        crop = crop_face(clean)  # what the job computes (core/control.py → core.faces)
        assert crop is not None, "the test face must have a face"
        self.box = find_faces(clean)[0]
        self.crop = crop
        self.needles = {
            "the reference as sent": self.sent[200:456],
            "the reference in base64": self.b64[1000:1256].encode(),
            "the reference's pixels": _row(clean),
            "the face crop's pixels": _row(crop),
            "the face crop as PNG": png(crop)[100:356],
            "the face crop, grey": _row(crop.convert("L")),
        }

    def found_in(self, folders: list[Path], since: float) -> list[str]:
        """``"<needle> in <file>"`` for each needle found in a file changed since ``since``."""
        found = []
        for folder in folders:
            for path in _files(folder, since):
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                found += [f"{name} in {path}" for name, needle in self.needles.items()
                          if needle in data]
        return found

    def in_text(self, text: str) -> list[str]:
        """Face-derived things in a log: the picture in base64, the box's numbers."""
        box = self.box
        marks = [self.b64[1000:1064], f"{box.x}, {box.y}", f"{box.x},{box.y}",
                 f"x={box.x}", f"{box.width}x{box.height}", "face_found"]
        return [mark for mark in marks if mark in text]


def _row(image: Image.Image) -> bytes:
    """One middle row of raw pixels: how a picture's plaintext would sit in a file."""
    width, height = image.size
    raw = image.tobytes()
    row = len(raw) // height
    return raw[row * (height // 2): row * (height // 2 + 1)]


def _files(folder: Path, since: float) -> Iterator[Path]:
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if (path.is_file() and not path.is_symlink() and info.st_mtime >= since
                and info.st_size <= BIG_FILE and path.suffix != ".safetensors"):
            yield path


# -- the server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def private_temp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's temp folder: Python's tempfile module points here for this module."""
    folder = tmp_path_factory.mktemp("server-tmp")
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = before


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("biometric")


@pytest.fixture(scope="module")
def server(models_dir: Path, server_dir: Path, private_temp: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    library = build_portrait_library(tmp_path_factory.mktemp("portrait-models"), models_dir)
    for running in start_server(server_dir, library, accounts=True, default_model=SD):
        running.studio.settings.data_dir.chmod(0o700)  # as `obscura serve` makes it
        yield running


@pytest.fixture(autouse=True)
def forgiven(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").clock[0] += 2 * 86400


@pytest.fixture(scope="module")
def alice(server: Running) -> Member:
    return member(server, "alice")


@pytest.fixture
def face() -> Face:
    return Face()


def portrait(face: Face, **fields: Any) -> dict[str, Any]:
    """img2img of the face with an IP-Adapter Plus-Face unit on the same face, cropped."""
    small = b64_png(Image.open(io.BytesIO(face.sent)).resize((64, 64)))
    unit = {"enabled": True, "module": "ip-adapter_clip_sd15", "model": IP_ADAPTER,
            "image": face.b64, "weight": 1.0, "obscura_crop_face": True}
    return {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2, "seed": 3,
            "denoising_strength": 0.9, "init_images": [small], "save_images": True,
            "alwayson_scripts": {"controlnet": {"args": [unit]}}, **fields}


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode()


def places(server: Running, server_dir: Path, private_temp: Path) -> list[Path]:
    """Where a trace could be: data dir (spool, gallery, audit log), RAM folder, temp folders."""
    return [server.studio.settings.data_dir, server_dir / "ram", private_temp]


def system_temp() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp")  # noqa: S108


def assert_no_trace(server: Running, face: Face, server_dir: Path, private_temp: Path,
                    since: float) -> None:
    spool = server.studio.spool
    assert len(spool) == 0, "a spooled picture outlived its job"
    assert [p.name for p in spool.root.iterdir() if not p.name.startswith(".")] == []
    folders = [*places(server, server_dir, private_temp), system_temp()]
    assert face.found_in(folders, since) == []
    report = run_audit(server.studio.settings.data_dir, AuditSettings(),
                       temp_dirs=[server_dir / "ram", private_temp])
    assert report.ok, report.to_text()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    client_side = ("httpx", "httpcore", "urllib3")  # this test's own HTTP client
    return "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                     if not r.name.startswith(client_side))


def post(server: Running, who: Member, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/sdapi/v1/img2img", json=body, headers=who.bearer,
                      timeout=120)


# -- the tests --------------------------------------------------------------------------------------
def test_a_portrait_job_leaves_no_trace_of_the_face(server, alice, face, server_dir,
                                                    private_temp, caplog):
    caplog.set_level(logging.DEBUG)
    since = time.time() - 1
    response = post(server, alice, portrait(face))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["obscura_face_found"] is True  # the crop was made (and used)
    assert info["obscura_saved_to_gallery"] is True
    assert_no_trace(server, face, server_dir, private_temp, since)
    assert face.in_text(logged(caplog)) == []
    assert face.in_text(json.dumps(info["infotexts"])) == []


def test_a_job_that_fails_right_after_the_crop_leaves_no_trace(
        server, alice, face, server_dir, private_temp, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    made: list[bool] = []
    real_crop = core.faces.crop_face

    def crop_then_break(*args: Any, **kwargs: Any) -> Any:
        crop = real_crop(*args, **kwargs)
        made.append(crop is not None)
        raise RuntimeError("the device broke down")  # midway: the crop exists in memory

    monkeypatch.setattr(core.faces, "crop_face", crop_then_break)
    since = time.time() - 1
    response = post(server, alice, portrait(face))
    assert made == [True]
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "job_failed"
    assert_no_trace(server, face, server_dir, private_temp, since)
    text = logged(caplog)
    assert face.in_text(text) == [] and "the device broke down" not in text


def test_a_cancelled_portrait_job_leaves_no_trace(server, alice, face, server_dir,
                                                  private_temp, caplog):
    caplog.set_level(logging.DEBUG)
    since = time.time() - 1
    box: dict[str, httpx.Response] = {}
    body = portrait(face, steps=150, width=128, height=128)
    thread = threading.Thread(target=lambda: box.setdefault("r", post(server, alice, body)))
    thread.start()
    progress = f"{server.url}/sdapi/v1/progress"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # running, past the crop: the face is in the job now
        state = httpx.get(progress, headers=alice.bearer).json()["state"]
        if state["sampling_step"] >= 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the portrait job never started")
    assert len(server.studio.spool) >= 1  # the reference and the photo wait encrypted
    httpx.post(f"{server.url}/sdapi/v1/interrupt", headers=alice.bearer)
    thread.join(60)
    assert box["r"].status_code == 200, box["r"].text
    assert json.loads(box["r"].json()["info"]).get("interrupted") is True
    assert_no_trace(server, face, server_dir, private_temp, since)
    assert face.in_text(logged(caplog)) == []


def test_no_ended_job_holds_the_face_while_the_run_goes_on(server, alice, face):
    """A run of several batches: each job lets go of its decrypted pictures (the reference
    face included) when it ends, not when the whole run ends."""
    seen: dict[str, Any] = {}
    box: dict[str, httpx.Response] = {}
    body = portrait(face, n_iter=3)
    thread = threading.Thread(target=lambda: box.setdefault("r", post(server, alice, body)))
    thread.start()
    while thread.is_alive():
        for job in server.studio.queue.jobs_of(alice.user_id):
            seen.setdefault(job.id, job)
        time.sleep(0.005)
    thread.join()
    assert box["r"].status_code == 200, box["r"].text
    assert len(seen) >= 2
    for job in seen.values():
        assert job.done
        assert pictures_in(job.request) == [], "an ended job still holds its pictures"


def test_the_needles_are_found_where_they_are(face, tmp_path):
    """The search itself works: the crop saved as PNG, or its raw pixels, or the reference in
    base64 anywhere in a file, is found."""
    since = time.time() - 1
    (tmp_path / "a.png").write_bytes(png(face.crop))
    (tmp_path / "b.bin").write_bytes(b"header" + face.crop.tobytes() + b"tail")
    (tmp_path / "c.log").write_text(f"upload: {face.b64}")
    found = face.found_in([tmp_path], since)
    assert any("the face crop as PNG" in line and "a.png" in line for line in found)
    assert any("the face crop's pixels" in line and "b.bin" in line for line in found)
    assert any("the reference in base64" in line and "c.log" in line for line in found)
    assert face.in_text(f"found a face at {face.box.x}, {face.box.y}") != []


def test_the_inventory_marks_the_face_flows_biometric_and_keeps_them_off_plain_disk():
    biometric = [store for store in STORES if store.biometric]
    assert {store.name for store in biometric} >= {"spool", "face data of a job"}
    for store in biometric:  # memory only, or encrypted containers on disk
        assert store.medium == "memory" or set(store.files) - {
            "spool/", "spool/.obscura-spool"} <= set(store.encrypted_containers), store.name
    assert sum(flow.biometric for flow in PORTRAIT_FLOWS) >= 3
    document = (Path(__file__).resolve().parents[2] / "docs" / "data-flows.md").read_text()
    assert "**Biometric: yes.**" in document and "- **Biometric:** yes" in document
