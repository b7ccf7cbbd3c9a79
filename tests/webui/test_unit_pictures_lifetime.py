"""A unit's pictures live for their job only, a body's pictures have a pixel budget, and
/controlnet/detect's waiting line holds no bodies (reviewer findings 3, 4, 5).

A real accounts-mode server in this process (as ``obscura serve`` starts one), with the demo SD
model and the tiny portrait files (tests/portrait_files.py), so that the test can count the
pictures still alive in the server's memory. Each case sends its unit pictures at a size no
other picture in the process has (the IP-Adapter reference is a face: biometric data, kept for
the job only), then, once the job has ended, collects garbage and counts the live PIL images of
that size: none may be left — after a job that is done, one that fails (no face found) and one
whose caller hung up.
"""

from __future__ import annotations

import base64
import functools
import gc
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import webui.api.controlnet
import webui.run
from tests.webui.test_api import SD, Member, Running, member, start_server
from tests.webui.test_api_controlnet import (
    b64,
    build_portrait_library,
    control_unit,
    drawing,
    face,
    ip_unit,
    post,
    scripts,
    small,
)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    library = build_portrait_library(tmp_path_factory.mktemp("lifetime-models"), models_dir)
    yield from start_server(tmp_path_factory.mktemp("lifetime"), library, accounts=True,
                            default_model=SD)


@pytest.fixture(autouse=True)
def forgiven(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").clock[0] += 2 * 86400


@pytest.fixture(scope="module")
def alice(server: Running) -> Member:
    return member(server, "alice")


def alive(size: tuple[int, int]) -> int:
    """Live PIL images of ``size`` in this process (the server's memory included)."""
    gc.collect()
    return sum(1 for thing in gc.get_objects()
               if isinstance(thing, Image.Image) and thing.size == size)


def settles_to_none(size: tuple[int, int], seconds: float = 10.0) -> int:
    """The count once the job's worker has let go (it ends a moment after the answer)."""
    deadline = time.monotonic() + seconds
    while (count := alive(size)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def portrait_units(size: tuple[int, int], reference: Image.Image | None = None) -> dict[str, Any]:
    """An IP-Adapter unit with a face reference cropped to the face + a ControlNet unit, both
    pictures of ``size`` (only their base64 text is kept here)."""
    picture = b64((reference or face()).resize(size))
    control = b64(drawing().resize(size))
    return scripts(ip_unit(image=picture, obscura_crop_face=True), control_unit(image=control))


def test_a_done_jobs_unit_pictures_are_gone_once_it_ends(server, alice):
    size = (200, 176)
    response = post(server, alice, "txt2img", small(**portrait_units(size)))
    assert response.status_code == 200, response.text
    assert settles_to_none(size) == 0, "a unit picture of the ended job is still in memory"


def test_a_failed_jobs_unit_pictures_are_gone_once_it_ends(server, alice):
    size = (202, 178)
    blank = Image.new("RGB", (64, 64), "white")  # no face to crop: the job fails
    response = post(server, alice, "txt2img", small(**portrait_units(size, blank)))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "no_face_found"
    assert settles_to_none(size) == 0, "a unit picture of the failed job is still in memory"


def test_the_unit_pictures_of_a_job_whose_caller_hung_up_are_gone(server, alice):
    size = (204, 180)
    body = small(steps=150, width=128, height=128, **portrait_units(size))
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/sdapi/v1/txt2img", json=body, headers=alice.bearer,
                   timeout=httpx.Timeout(5.0, read=2.0))
    deadline = time.monotonic() + 60
    while any(not job.done for job in server.studio.queue.jobs_of(alice.user_id)):
        assert time.monotonic() < deadline, "the job of a caller who hung up went on"
        time.sleep(0.1)
    assert settles_to_none(size) == 0, "a unit picture of the cancelled job is still in memory"


# -- the pixel budget of a body's unit and reference pictures --------------------------------
@functools.cache
def solid_png(side: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 90, 60)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_unit_pictures_over_the_pixel_budget_are_refused_before_any_is_decoded(
        server, alice, monkeypatch):
    """Four ControlNet units of 6000x6000 solid PNGs (a few MB of body, 144 MP): one sentence
    naming the unit that goes over, read from the pictures' headers; nothing is decoded."""
    decoded: list[int] = []
    real_scrub = webui.run.scrub

    def counting_scrub(*args: Any, **kwargs: Any) -> Image.Image:
        decoded.append(1)
        return real_scrub(*args, **kwargs)

    monkeypatch.setattr(webui.run, "scrub", counting_scrub)
    big = solid_png(6000)
    budget = webui.run.UNIT_PIXEL_BUDGET * server.studio.max_upload_pixels
    assert 2 * 36_000_000 <= budget < 4 * 36_000_000  # two fit, four do not
    body = small(**scripts(*[control_unit(image=big) for _ in range(4)]))
    started = time.monotonic()
    response = post(server, alice, "txt2img", body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "unit_pictures_too_many_pixels"
    assert answer["field"] == "alwayson_scripts.controlnet.args.2.image"
    assert answer["detail"].endswith(".") and "\n" not in answer["detail"]
    assert decoded == [], "a picture was decoded before the budget was checked"
    assert time.monotonic() - started < 30


def test_a_large_unit_picture_within_the_budget_still_paints(server, alice):
    body = small(**scripts(ip_unit(obscura_crop_face=True), control_unit(image=solid_png(6000))))
    response = post(server, alice, "txt2img", body)
    assert response.status_code == 200, response.text


# -- /controlnet/detect's waiting line --------------------------------------------------------
def test_detect_reads_no_body_while_waiting_and_refuses_past_its_line(server, alice, monkeypatch):
    """Two detect requests run, two wait without reading their bodies, a fifth is a 503 with
    one sentence; once the running ones end, the waiting ones run. One caller holds at most
    two of the places (alice and bob fill the line here; a third of alice's is refused)."""
    bob = member(server, "bob")
    release = threading.Event()
    reads: list[int] = []
    real_detect, real_read = webui.api.controlnet.detect_one, webui.api.controlnet.read_json

    def slow_detect(*args: Any, **kwargs: Any) -> str:
        release.wait(60)
        return real_detect(*args, **kwargs)

    async def counting_read(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(webui.api.controlnet, "detect_one", slow_detect)
    monkeypatch.setattr(webui.api.controlnet, "read_json", counting_read)
    body = {"controlnet_module": "canny", "controlnet_input_images": [b64(drawing())],
            "controlnet_processor_res": 64}
    url = f"{server.url}/controlnet/detect"
    codes: list[int] = []

    def hit(who: Member) -> None:
        codes.append(httpx.post(url, headers=who.bearer, json=body, timeout=120).status_code)

    admitted = webui.api.controlnet.DETECT_RUNNING + webui.api.controlnet.DETECT_WAITING
    assert webui.api.controlnet.DETECT_PER_CALLER * 2 == admitted
    threads = [threading.Thread(target=hit, args=(who,)) for who in (alice, bob) * 2]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(reads) < webui.api.controlnet.DETECT_RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # the waiting ones have had time to read, were they to
        assert len(reads) == webui.api.controlnet.DETECT_RUNNING, "a waiting request read its body"
        deadline = time.monotonic() + 30
        while True:  # every place taken (two read their bodies, two wait without reading)
            extra = httpx.post(url, headers=alice.bearer, json=body, timeout=30)
            if extra.status_code == 503 or time.monotonic() > deadline:
                break
        assert extra.status_code == 503, extra.text
        assert extra.json()["error"] == "detect_busy"
        assert extra.json()["detail"].endswith(".") and "retry-after" in extra.headers
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert codes == [200] * admitted
    assert len(reads) == admitted


def test_one_caller_cannot_fill_detects_line_and_a_stalled_body_gives_its_place_up(
    server, alice, monkeypatch
):
    """A caller with two stalled uploads (headers sent, the body never finished) holds no more
    than its two places, and only until the body deadline: another caller is served meanwhile
    and afterwards (found by the second review: four stalled sockets locked everyone out)."""
    import socket
    from urllib.parse import urlsplit

    bob = member(server, "bob")
    monkeypatch.setattr(webui.api.controlnet, "DETECT_BODY_SECONDS", 2.0)
    where = urlsplit(server.url)
    stalled = []
    for _ in range(4):  # bob tries to take every place
        sock = socket.create_connection((where.hostname, where.port), timeout=10)
        head = (f"POST /controlnet/detect HTTP/1.1\r\nHost: {where.netloc}\r\n"
                f"Authorization: Bearer {bob.token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                '{"controlnet_module":')
        sock.sendall(head.encode())
        stalled.append(sock)
    try:
        body = {"controlnet_module": "canny", "controlnet_input_images": [b64(drawing())],
                "controlnet_processor_res": 64}
        url = f"{server.url}/controlnet/detect"
        time.sleep(0.5)
        served = httpx.post(url, headers=alice.bearer, json=body, timeout=30)
        assert served.status_code == 200, served.text  # bob holds two places, not four
        codes = []
        for sock in stalled:  # two refused at once, two admitted and dropped at the deadline
            sock.settimeout(10)
            codes.append(int(sock.recv(200).split(b" ", 2)[1]))
        assert sorted(codes) == [408, 408, 503, 503], codes
        assert httpx.post(url, headers=bob.bearer, json=body, timeout=30).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
