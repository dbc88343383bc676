from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAQ_DATA = SHARED / "data" / "stackoverflow-faq"


@pytest.fixture(scope="session")
def faq_data() -> Path:
    if not (FAQ_DATA / "orig-q.tsv").exists():
        pytest.skip(f"shared Stack Overflow data not found at {FAQ_DATA} (it sits beside the project root)")
    return FAQ_DATA
