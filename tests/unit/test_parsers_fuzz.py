"""Property-based fuzzing (hypothesis) of the parsers that see raw client input: whatever the bytes or text,
they answer or raise their own error type, never anything else."""

import io

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deployments.errors import InvalidInput
from deployments.faq.text import clean_text, title_of
from deployments.resnet.preprocess import decode_image
from serve_app.auth import Authenticator, AuthFailure, AuthSettings, Principal
from serve_app.errors import RequestError
from serve_app.image_input import _from_json

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_PIXELS = 4_000_000


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


REAL_IMAGES = [_encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")]


@st.composite
def mutated_images(draw) -> bytes:
    """A real image with some bytes overwritten, cut short or extended: gets past the format sniffing."""
    data = bytearray(draw(st.sampled_from(REAL_IMAGES)))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


@FUZZ
@given(st.one_of(st.binary(max_size=4096), mutated_images()))
def test_decoding_any_bytes_gives_an_image_or_an_image_error(data):
    try:
        image = decode_image(data, MAX_PIXELS)
    except InvalidInput as error:
        kinds = {"empty_image", "not_an_image", "unsupported_image_format", "corrupt_image", "image_too_large"}
        kinds.add("image_too_complex")
        assert error.kind in kinds | {"image_too_elongated"}
    else:
        assert image.mode == "RGB" and image.width * image.height <= MAX_PIXELS


@FUZZ
@given(st.binary(max_size=2048))
def test_classify_json_bodies_parse_or_give_a_client_error(body):
    try:
        images, _, _ = _from_json(body)
    except (RequestError, InvalidInput, RequestValidationError):
        return
    assert all(isinstance(image, bytes) for image in images)


@FUZZ
@given(st.text(max_size=2000))
def test_cleaning_any_text_gives_lower_case_text(text):
    cleaned = clean_text(text)
    assert cleaned == cleaned.lower()
    assert isinstance(title_of(text), str)


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300))
def test_clean_text_on_html_like_input(fragment):
    html = f'<p>{fragment}</p><pre><code>{fragment}</code></pre><a href="http://x.y/{fragment}">{fragment}</a>'
    assert "<pre>" not in clean_text(html)


@pytest.fixture(scope="module")
def authenticator(monkeypatch_module) -> Authenticator:
    monkeypatch_module.setenv("SERVE_APP_API_KEYS", "fuzz-primary-key-0123456789,fuzz-secondary-key-0123456789")
    monkeypatch_module.setenv("SERVE_APP_JWT_SECRET", "fuzz-signing-secret-0123456789abcdef0123")
    return Authenticator(AuthSettings())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@FUZZ
@given(
    st.one_of(
        st.none(),
        st.text(max_size=10_000),
        st.text(max_size=500).map(lambda credential: f"Bearer {credential}"),
        st.text(max_size=500).map(lambda credential: f"Bearer eyJ{credential}.eyJ{credential}.{credential}"),
    )
)
def test_any_authorization_header_is_accepted_or_refused_never_an_error(authenticator, header):
    result = authenticator.check(header)
    assert isinstance(result, AuthFailure | Principal)
    assert isinstance(result, AuthFailure)  # no random header is a valid key or token
