"""The published OpenAPI schema, fuzzed (schemathesis over hypothesis, a bounded number of examples per operation):
whatever a client sends, the answer is never a 500 and never hangs."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from gptkit.server.app import create_app
from gptkit.server.engine import Engine
from gptkit.server.fine_tuning import FineTuningConfig
from gptkit.server.served import ServedModel
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE

pytest_plugins = ["server_fixtures"]


@pytest.fixture(scope="module")
def app(oracle, tiny_dir, tmp_path_factory) -> Any:
    """A small engine (4 rows, 8 waiting at most) so that no generated request keeps it busy for long; the Files
    and fine-tuning jobs endpoints over a data directory of their own (no job worker)."""
    engine = Engine(oracle.model, oracle.tokenizer, max_batch_size=4, max_queue=8).start()
    fine_tuning = FineTuningConfig(tmp_path_factory.mktemp("fuzz-data"))
    app = create_app(
        {"tiny": ServedModel(engine, DEFAULT_CHAT_TEMPLATE, source=str(tiny_dir))}, fine_tuning=fine_tuning
    )
    yield app
    engine.close(drain=False, timeout=30)
    app.state.fine_tuning.store.close()


def served_model(case: Any) -> Any:
    """Generated requests name the served model, so that they get past the lookup into the engine (unknown models
    are tested elsewhere)."""
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = "tiny"
    if case.path_parameters and "model" in case.path_parameters:
        case.path_parameters["model"] = "tiny"
    return case


def test_no_request_gets_a_500(app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/completions", "POST /v1/files", "POST /v1/fine_tuning/jobs"}
    for operation in operations:

        @given(case=operation.as_strategy().map(served_model))
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def answers(case: Any) -> None:
            response = case.call(timeout=60)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        answers()
