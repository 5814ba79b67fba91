"""Fixtures of the server tests (test modules load them with pytest_plugins = ["server_fixtures"]): a tiny random
GPT-2 folder, served by a running engine, and a second copy of its weights for the oracles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server_helpers import KEY, tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("served") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> Any:
    """The folder loaded as `gptkit serve --model DIR --chat-template (gptkit's default)` would, engine running."""
    from gptkit.server.served import load_served
    from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE

    served = load_served(tiny_dir, max_batch_size=8, chat_template=DEFAULT_CHAT_TEMPLATE)
    served.engine.start()
    yield served
    served.engine.close(drain=False, timeout=30)


@pytest.fixture(scope="module")
def oracle(tiny_dir: Path) -> Any:
    """A second copy of the same weights for the oracles, so the test thread never shares the engine's model."""
    from gptkit.tasks.bundle import load

    return load(tiny_dir, lm=True)


@pytest.fixture
def api(tiny: Any) -> Any:
    """The app over `tiny`, served as "tiny", keys required."""
    from gptkit.server.app import create_app

    return create_app({"tiny": tiny}, api_keys=[KEY])
