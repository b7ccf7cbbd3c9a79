"""Pictures are sealed to the owner's key as it was when the job was submitted."""

from __future__ import annotations

from types import SimpleNamespace

from PIL import Image

from core.engine import GenerationRequest, GenerationResult
from privacy.gallery import Gallery
from privacy.sealing import generate_owner_keypair
from webui.run import _deliver


def test_a_reset_during_the_job_does_not_reseal_the_picture_to_the_new_key(tmp_path):
    old_private, old_public = generate_owner_keypair()
    # No public_key() here: _deliver must use the key captured at submission, not look it up.
    accounts = SimpleNamespace(settings=lambda user: SimpleNamespace(embed_parameters=False))
    studio = SimpleNamespace(accounts=accounts, gallery=Gallery(tmp_path / "gallery"))
    viewer = SimpleNamespace(user_id="u_" + "b" * 32)
    result = GenerationResult(
        images=[Image.new("RGB", (8, 8), (1, 2, 3))], seeds=[1], seed=1, model="m", is_demo=True,
        sampler="Euler a", num_inference_steps=1, guidance_scale=5.0, width=8, height=8,
        mode="txt2img",
    )
    pictures = _deliver(studio, viewer.user_id, GenerationRequest("p"), [result], old_public)
    assert len(pictures) == 1 and pictures[0].png.startswith(b"\x89PNG")
    [picture] = studio.gallery.list(viewer.user_id)
    assert studio.gallery.open(viewer.user_id, picture.id, old_private).startswith(b"\x89PNG")
