"""The fundus preparation: disc found and cropped, one circular field of view, colour and contrast made alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.contract.fundus import circle_mask, disc_box, normalise_fundus
from app.contract.preprocessing import ColourMode, Enhancement, InputSpec, decode
from tests.images import image_bytes


def fundus_photo(
    width: int = 300,
    height: int = 240,
    *,
    box: tuple[int, int, int, int] = (60, 20, 260, 220),
    tint: tuple[int, int, int] = (200, 110, 60),
    gain: float = 1.0,
    seed: int = 0,
) -> Image.Image:
    """A disc of one tint on black, with 'vessels' (dark lines) and 'lesions' (bright dots) at fixed places."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse(box, fill=tint)
    left, top, right, bottom = box
    for k in range(5):  # vessels across the disc, relative to it
        x = left + (k + 1) * (right - left) // 6
        draw.line([(x, top + 20), (x + 15, bottom - 20)], fill=tuple(int(c * 0.5) for c in tint), width=3)
    rng = np.random.default_rng(seed)
    for _ in range(12):
        x, y = rng.integers(left + 40, right - 40), rng.integers(top + 40, bottom - 40)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(255, 240, 180))
    pixels = np.asarray(image, dtype=np.float32) * gain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_the_disc_box_is_found_and_a_blank_image_keeps_its_frame() -> None:
    left, top, right, bottom = disc_box(fundus_photo(box=(60, 20, 260, 220)))
    assert abs(left - 60) <= 3 and abs(top - 20) <= 3 and abs(right - 261) <= 3 and abs(bottom - 221) <= 3
    assert disc_box(Image.new("RGB", (50, 40))) == (0, 0, 50, 40)


def test_the_result_is_square_with_a_uniform_surround_whatever_the_photograph() -> None:
    for photo in (fundus_photo(), fundus_photo(400, 200, box=(100, -40, 300, 240))):  # a disc cut off top and bottom
        result = np.asarray(normalise_fundus(photo, 64), dtype=np.int16)
        assert result.shape == (256, 256, 3)
        outside = ~circle_mask(256)
        assert np.all(result[outside] == 128)
        inside = result[~outside].astype(np.float32)
        assert np.allclose(inside.mean(axis=0), 128, atol=3)
        # 32 before clipping; the saturated synthetic lesions lose a little to the clip
        assert np.all((inside.std(axis=0) > 24) & (inside.std(axis=0) < 34))


def test_tint_and_exposure_of_the_camera_are_taken_away_but_vessels_and_lesions_stay() -> None:
    warm = np.asarray(normalise_fundus(fundus_photo(tint=(200, 110, 60)), 64), dtype=np.float32)
    dim_cool = np.asarray(normalise_fundus(fundus_photo(tint=(150, 120, 90), gain=0.6), 64), dtype=np.float32)
    raw_difference = np.abs(
        np.asarray(fundus_photo(tint=(200, 110, 60)), np.float32)
        - np.asarray(fundus_photo(tint=(150, 120, 90), gain=0.6), np.float32)
    ).mean()
    assert np.abs(warm - dim_cool).mean() < raw_difference / 4
    plain = np.asarray(normalise_fundus(fundus_photo(seed=1), 64), dtype=np.float32)
    other_lesions = np.asarray(normalise_fundus(fundus_photo(seed=2), 64), dtype=np.float32)
    assert np.abs(plain - other_lesions).max() > 60  # the lesions are still there to see


def test_grayscale_fundus_keeps_its_mode() -> None:
    result = normalise_fundus(fundus_photo().convert("L"), 32)
    assert result.mode == "L" and result.size == (128, 128)


def test_the_service_prepares_a_fundus_upload_to_the_model_input() -> None:
    spec = InputSpec(48, 48, ColourMode.RGB, Enhancement.FUNDUS)
    pixels = decode(image_bytes(fundus_photo(), "JPEG"), spec, max_pixels=10**6).pixels
    assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
    assert np.all(pixels[0, 0] == 128)  # the corner is outside the field of view
    plain = decode(image_bytes(fundus_photo(), "JPEG"), InputSpec(48, 48, ColourMode.RGB), max_pixels=10**6).pixels
    assert np.all(plain[0, 0] < 10)  # without the enhancement the black surround stays


def test_a_large_jpeg_is_decoded_no_smaller_than_the_fundus_work_size() -> None:
    from app.contract.fundus import work_side
    from app.contract.preprocessing import load_first_frame, read_header

    data = image_bytes(fundus_photo(1600, 1200, box=(300, 100, 1300, 1100)), "JPEG")
    fundus = load_first_frame(
        read_header(data, max_pixels=10**7), InputSpec(96, 96, ColourMode.RGB, Enhancement.FUNDUS)
    )
    plain = load_first_frame(read_header(data, max_pixels=10**7), InputSpec(96, 96, ColourMode.RGB))
    assert min(fundus.size) >= work_side(96) > min(plain.size)  # the disc keeps its detail for the normalisation


def test_a_disc_cut_off_by_the_frame_is_boxed_as_a_square_not_squashed() -> None:
    photo = fundus_photo(400, 200, box=(100, -40, 300, 240))  # the frame cuts 40 px off the top and bottom
    left, top, right, bottom = disc_box(photo)
    assert right - left == bottom - top  # a square around the visible part, padded with black beyond the frame
    assert abs((left + right) / 2 - 200) <= 2 and abs(right - left - 201) <= 3


@pytest.mark.parametrize("enhancement", [Enhancement.FUNDUS, Enhancement.DISC])
def test_a_camera_photograph_is_answered_like_the_cropped_training_image_of_the_same_eye(enhancement) -> None:
    """A 3000x2000 camera frame (3:2), the disc off-centre on a wide black surround, vs the same eye cropped to
    its disc at 288 px as the training images are: the model input is the same within JPEG and resampling noise."""
    spec = InputSpec(128, 128, ColourMode.RGB, enhancement)
    box = (1400, 300, 2900, 1800)  # 1500 px disc, right of centre
    camera = fundus_photo(3000, 2000, box=box, seed=3)
    cropped = camera.crop((box[0], box[1], box[2] + 1, box[3] + 1)).resize((288, 288), Image.Resampling.BILINEAR)
    from_camera = decode(image_bytes(camera, "JPEG", quality=92), spec, max_pixels=10**7).pixels.astype(np.float32)
    from_crop = decode(image_bytes(cropped, "JPEG", quality=90), spec, max_pixels=10**7).pixels.astype(np.float32)
    uncropped = decode(
        image_bytes(camera.resize((288, 192)), "JPEG", quality=90),
        InputSpec(128, 128, ColourMode.RGB),
        max_pixels=10**7,
    ).pixels.astype(np.float32)
    assert np.abs(from_camera - from_crop).mean() < 6
    assert np.abs(uncropped - from_crop).mean() > 4 * np.abs(from_camera - from_crop).mean()


def test_the_service_finds_the_disc_wherever_the_camera_put_it(tmp_path) -> None:
    """One eye photographed at 3000x2000 with its disc left, then right of centre: the service answers both
    (the size as sent reported) from the same model input; without the crop the two frames would be different
    inputs (the disc in another place)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.model_fixtures import export_untrained

    export_untrained(tmp_path, "retinopathy", colour_mode="rgb", size=96, enhancement="fundus")
    left = fundus_photo(3000, 2000, box=(200, 250, 1700, 1750), seed=4)
    right = fundus_photo(3000, 2000, box=(1300, 250, 2800, 1750), seed=4)
    with TestClient(create_app(Settings(models_dir=tmp_path))) as client:
        answers = [
            client.post("/predict/retinopathy", content=image_bytes(image, "JPEG", quality=92),
                        headers={"Content-Type": "image/jpeg"}).json()
            for image in (left, right)
        ]  # fmt: skip
    assert answers[0]["image"] == answers[1]["image"] == {"width": 3000, "height": 2000}
    assert answers[0]["warning"] is None and answers[0]["label"] in {"infected", "uninfected"}
    fundus = InputSpec(96, 96, ColourMode.RGB, Enhancement.FUNDUS)
    inputs = [
        decode(image_bytes(image, "JPEG"), fundus, max_pixels=10**7).pixels.astype(int) for image in (left, right)
    ]
    assert np.abs(inputs[0] - inputs[1]).mean() < 3
    plain = InputSpec(96, 96, ColourMode.RGB)  # without the fundus preparation the inputs differ
    moved = [decode(image_bytes(image, "JPEG"), plain, max_pixels=10**7).pixels.astype(int) for image in (left, right)]
    assert np.abs(moved[0] - moved[1]).mean() > 20


def test_the_disc_preparation_crops_the_disc_and_keeps_its_colours() -> None:
    spec = InputSpec(64, 64, ColourMode.RGB, Enhancement.DISC)
    camera = fundus_photo(1500, 1000, box=(800, 100, 1400, 700), tint=(200, 110, 60), seed=5)
    tight = camera.crop((800, 100, 1401, 701))
    from_camera = decode(image_bytes(camera, "PNG"), spec, max_pixels=10**7).pixels.astype(int)
    from_tight = decode(image_bytes(tight, "PNG"), spec, max_pixels=10**7).pixels.astype(int)
    assert np.abs(from_camera - from_tight).mean() < 3
    centre = from_camera[28:36, 28:36].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2]  # the tint as photographed: red over green over blue


@pytest.mark.parametrize("enhancement", [Enhancement.DISC, Enhancement.FUNDUS])
def test_a_thin_strip_is_prepared_at_the_size_it_is_used_not_squared_at_full_size(enhancement) -> None:
    # Found by fuzzing: a 20 x 32,792 px image (a 410-byte JPEG) squared to 1.1 G pixels, refused by Pillow's
    # bomb check as a 500; a strip under the check would have taken hundreds of MB.
    strip = image_bytes(Image.new("RGB", (20, 32_792), (200, 110, 60)), "JPEG")
    assert len(strip) < 20_000
    decoded = decode(strip, InputSpec(48, 48, ColourMode.RGB, enhancement), max_pixels=4_000_000)
    assert decoded.pixels.shape == (48, 48, 3)


def test_a_square_far_beyond_the_frame_is_made_as_cropping_then_resizing_would() -> None:
    from app.contract.fundus import FAR_BEYOND, crop_disc

    tall = fundus_photo(100, 500, box=(5, 20, 95, 480))  # a disc boxed 460 px a side, 4x the frame
    box = disc_box(tall)
    assert (box[2] - box[0]) * (box[3] - box[1]) > FAR_BEYOND * tall.width * tall.height
    expected = np.asarray(tall.crop(box).resize((96, 96), Image.Resampling.BILINEAR), dtype=np.float32)
    scaled = crop_disc(tall, 96)
    assert scaled.size == (96, 96)
    assert np.abs(np.asarray(scaled, dtype=np.float32) - expected).mean() < 2.0  # edges rounded apart only
    camera = fundus_photo(300, 200, box=(60, 10, 240, 190))  # a 3:2 frame: cropped at full size, as trained
    assert crop_disc(camera, 96).tobytes() == camera.crop(disc_box(camera)).tobytes()
