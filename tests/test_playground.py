"""The playground page in a real browser (Debian's chromium, driven by Playwright) against a real `gptkit serve` app
under uvicorn on a loopback port, with a job worker process: what a person does on each page, checked against the
model itself (`generate`), the API through the `openai` SDK, and `gptkit tokenize`. Every request the page makes is
recorded and must stay within /v1, /health and the page's own files. Each page is photographed at a laptop and a
phone width into a folder the run prints at its end.

Without chromium or Playwright these tests skip, unless GPTKIT_REQUIRE_BROWSER is set (CI sets it): then they fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gptkit.generation.generate import generate
from gptkit.generation.params import SamplingParams
from gptkit.server.app import PLAYGROUND, create_app
from gptkit.server.fine_tuning import FineTuningConfig
from gptkit.server.served import load_served
from gptkit.tasks.bundle import load
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE
from server_helpers import KEY, job_supervisor, raw, serving, small_model_dir, sync_client

pytest_plugins = ["server_fixtures"]

WIDTHS = {"laptop": (1280, 800), "phone": (390, 844)}
PAGE_BUDGET = 300_000  # bytes, all of the page's files uncompressed
JOB_MS = 300_000  # the fine-tuning job may take five minutes on a busy machine


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (waits for the page without evaluating script: the page forbids eval)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def chromium() -> str:
    """Debian's chromium, or a skip (a failure where GPTKIT_REQUIRE_BROWSER is set)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if found is None:
        reason = "no chromium on PATH (apt-get install -y chromium)"
    if reason is not None:
        if os.environ.get("GPTKIT_REQUIRE_BROWSER"):
            pytest.fail(f"the browser tests are required here: {reason}")
        pytest.skip(reason)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


# -- the server and the browser ---------------------------------------------------------------------


@dataclass
class Site:
    url: str  # the page: http://127.0.0.1:PORT/
    api: str  # its API root: .../v1
    model_dir: Path
    oracle: Any  # a second copy of the served weights, for the oracles
    client: Any  # the openai SDK on the same server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A tiny GPT-2 (with GPT-2's tokenizer and gptkit's chat template) served with fine-tuning, keys required."""
    root = tmp_path_factory.mktemp("playground")
    served = load_served(small_model_dir(root / "tiny"), chat_template=DEFAULT_CHAT_TEMPLATE)
    served.engine.start()
    supervisor = job_supervisor(root / "data")
    app = create_app(
        {"tiny": served}, api_keys=[KEY], fine_tuning=FineTuningConfig(root / "data", supervisor=supervisor)
    )
    try:
        with serving(app) as api:
            client = sync_client(api)
            yield Site(api.removesuffix("v1"), api, root / "tiny", load(root / "tiny", lm=True), client)
            client.close()
    finally:
        served.engine.close(drain=False, timeout=30)


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the pages' pictures go to ($GPTKIT_SCREENSHOTS, else a fresh temporary one); printed at the end."""
    folder = Path(os.environ.get("GPTKIT_SCREENSHOTS") or tmp_path_factory.mktemp("playground-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    request.config.pluginmanager.register(_SaysWhere(folder), "playground-screenshots")
    return folder


class _SaysWhere:
    """A plugin for one run: the screenshots' folder, in the run's closing summary."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"playground screenshots: {self.folder}")


@dataclass
class Visit:
    """One browser tab on the site, the API key remembered in its local storage; every request it makes is kept."""

    page: Any
    site: Site
    folder: Path
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def shoot(self, name: str) -> None:
        """The page at both widths, whole length."""
        for width_name, (width, height) in WIDTHS.items():
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=self.folder / f"{name}-{width_name}.png", full_page=True)
        self.page.set_viewport_size(dict(zip(("width", "height"), WIDTHS["laptop"], strict=True)))

    def tab(self, name: str) -> None:
        self.page.click(f"#tab-{name}")
        assert self.page.get_attribute(f"#tab-{name}", "aria-selected") == "true"


def open_visit(browser: Any, site: Site, folder: Path, key: str | None = KEY) -> Visit:
    context = browser.new_context(viewport=dict(zip(("width", "height"), WIDTHS["laptop"], strict=True)))
    if key is not None:
        context.add_init_script(f"localStorage.setItem('gptkit.playground.key', {json.dumps(json.dumps(key))})")
    page = context.new_page()
    page.set_default_timeout(60_000)
    visit = Visit(page, site, folder)
    page.on("request", lambda r: visit.requests.append(r.url))
    page.on("pageerror", lambda e: visit.errors.append(str(e)))
    page.goto(site.url)
    page.wait_for_selector("body[data-ready=true]")
    return visit


@pytest.fixture
def visit(browser: Any, site: Site, screenshots: Path) -> Iterator[Visit]:
    """A fresh tab (fresh storage) on the site. After the test: the page threw nothing and asked only its server's
    API and its own files."""
    seen = open_visit(browser, site, screenshots)
    yield seen
    seen.page.context.close()
    assert seen.errors == []
    outside = [url for url in seen.requests if not allowed(url, site.url)]
    assert outside == [], "the page asked outside /v1, /health and its own files"


def allowed(url: str, root: str) -> bool:
    parts, home = urlsplit(url), urlsplit(root)
    if parts.scheme == "data":  # the page's inline favicon
        return True
    local = (parts.scheme, parts.netloc) == (home.scheme, home.netloc)
    return local and (parts.path in ("/", "/health") or parts.path.startswith(("/v1/", "/playground/")))


def greedy(site: Site, text: str, tokens: int) -> str:
    ids = site.oracle.tokenizer.encode(text, allowed_special="all")
    params = SamplingParams(temperature=0, max_new_tokens=tokens)
    return generate(site.oracle.model, [ids], params, tokenizer=site.oracle.tokenizer)[0].text


def settings(page: Any, **values: Any) -> None:
    for name, value in values.items():
        page.fill(f"#{name}", str(value))


def wait_idle(page: Any, button: str) -> None:
    """Until a generation has ended: its Stop button is disabled again."""
    expect(page.locator(f"#{button}")).to_be_disabled()


# -- the tests --------------------------------------------------------------------------------------


def test_the_page_is_small_served_at_the_root_under_a_strict_policy_and_can_be_turned_off(tiny: Any) -> None:
    import asyncio

    weight = sum(f.stat().st_size for f in PLAYGROUND.iterdir() if f.is_file())
    assert 0 < weight <= PAGE_BUDGET
    page = asyncio.run(raw(create_app({"tiny": tiny}), "GET", "/"))
    assert page.status_code == 200 and "<title>gptkit playground</title>" in page.text
    policy = page.headers["content-security-policy"]
    assert "connect-src 'self'" in policy and "script-src 'self'" in policy
    script = asyncio.run(raw(create_app({"tiny": tiny}), "GET", "/playground/playground.js"))
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert asyncio.run(raw(create_app({"tiny": tiny}, playground=False), "GET", "/")).status_code == 404


def test_complete_streams_the_models_text_shows_probabilities_and_its_code_runs(visit: Visit, site: Site) -> None:
    page = visit.page
    page.select_option("#complete-model", "tiny")
    page.fill("#prompt", "Hello world")
    settings(page, temperature=0, max_tokens=8)
    page.check("#show-probs")
    with page.expect_response("**/v1/completions") as answered:
        page.click("#complete-submit")
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    assert json.loads(answered.value.request.post_data)["stream"] is True
    page.wait_for_selector("#complete-usage:has-text('finish: length')")
    want = greedy(site, "Hello world", 8)
    assert page.inner_text("#completion") == "Hello world" + want
    assert "8 completion tokens" in page.inner_text("#complete-usage")

    # each token coloured, and its top-5 alternatives with percentages on hover, as the API's logprobs say
    api = site.client.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0, logprobs=5)
    logprobs = api.choices[0].logprobs
    spans = page.locator("#completion .tok")
    assert spans.count() == len(logprobs.tokens) == 8
    for k in (0, 5):
        spans.nth(k).hover()
        rows = page.locator("#token-tip tr")
        shown = [
            (json.loads(rows.nth(i).locator("td").nth(0).inner_text()), rows.nth(i).locator("td").nth(1).inner_text())
            for i in range(rows.count())
        ]
        top = sorted(logprobs.top_logprobs[k].items(), key=lambda item: -item[1])
        assert [text for text, _ in shown] == [text for text, _ in top]
        for (_, percent), (_, logprob) in zip(shown, top, strict=True):
            assert math.isclose(float(percent.rstrip("%")), 100 * math.exp(logprob), rel_tol=0.05)  # two digits shown
        assert page.locator("#token-tip tr.chosen td").nth(0).inner_text() == json.dumps(logprobs.tokens[k])
    spans.nth(1).focus()  # the keyboard gets the same
    assert page.is_visible("#token-tip")
    page.keyboard.press("Escape")
    assert page.is_hidden("#token-tip")
    visit.shoot("complete")

    # the request as curl and as Python: both run, and both get the page's text
    page.click("#complete-code summary")
    page.wait_for_selector("#code-curl:has-text('curl')")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"OPENAI_API_KEY": KEY}
    curl = subprocess.run(["bash", "-c", page.inner_text("#code-curl")], capture_output=True, text=True, env=env)
    assert json.loads(curl.stdout)["choices"][0]["text"] == want, curl.stderr
    python = subprocess.run(
        [sys.executable, "-c", page.inner_text("#code-python")], capture_output=True, text=True, env=env
    )
    assert python.stdout == want + "\n", python.stderr


def test_stop_ends_a_stream_and_the_prompt_survives_a_reload(visit: Visit, site: Site) -> None:
    page = visit.page
    page.fill("#prompt", "Once upon a time")
    settings(page, temperature=0.9, max_tokens=120, seed=3)
    page.click("#complete-submit")
    expect(page.locator("#completion")).not_to_have_text("Once upon a time")
    page.click("#complete-stop")
    wait_idle(page, "complete-stop")
    usage = page.inner_text("#complete-usage")
    assert "finish: stopped" in usage or "finish: length" in usage  # a fast machine may finish first
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#prompt") == "Once upon a time"
    assert page.input_value("#max_tokens") == "120" and page.input_value("#seed") == "3"


def test_chat_two_turns_regenerate_and_clear(visit: Visit, site: Site) -> None:
    page = visit.page
    visit.tab("chat")
    settings(page, temperature=0, max_tokens=6)
    page.fill("#system", "Be brief.")
    page.fill("#chat-input", "Hi")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#messages li.assistant")
    wait_idle(page, "chat-stop")
    page.fill("#chat-input", "Tell me more")
    page.click("#chat-send")
    page.wait_for_selector("#messages li.assistant >> nth=1")
    wait_idle(page, "chat-stop")
    replies = page.locator("#messages li.assistant .content").all_inner_texts()

    messages: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    first = site.client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content}]
    messages += [{"role": "user", "content": "Tell me more"}]
    second = site.client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    assert replies == [first.choices[0].message.content, second.choices[0].message.content]
    visit.shoot("chat")

    page.click("#chat-regenerate")  # greedy: the same answer again, in place of the last one
    wait_idle(page, "chat-stop")
    expect(page.locator("#messages li")).to_have_count(4)
    assert page.locator("#messages li.assistant .content").all_inner_texts() == replies
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#messages li").count() == 4  # the conversation survives a reload
    page.click("#chat-clear")
    assert page.locator("#messages li").count() == 0


def test_tokenize_gives_the_ids_gptkit_tokenize_gives(visit: Visit, site: Site, capsys: pytest.CaptureFixture) -> None:
    from gptkit.cli import main

    text = "héllo wörld 😀 日本語\n<|endoftext|> tab\tend"
    page = visit.page
    visit.tab("tokenize")
    page.fill("#tokenize-text", text)
    expect(page.locator("#token-ids")).not_to_have_value("")
    shown = [int(i) for i in page.input_value("#token-ids").split(", ")]
    assert main(["tokenize", "--tokenizer", str(site.model_dir), "--allow-special", "--json", text]) == 0
    want = json.loads(capsys.readouterr().out)["ids"]
    assert shown == want
    assert page.locator("#chips .chip").count() == len(want)
    assert page.locator("#chips .chip .id").all_inner_texts() == [str(i) for i in want]
    assert page.inner_text("#tokenize-count").startswith(f"{len(want)} tokens")
    visit.shoot("tokenize")


def test_errors_are_the_apis_own_messages(browser: Any, site: Site, screenshots: Path) -> None:
    wrong = open_visit(browser, site, screenshots, key="sk-wrong")
    page = wrong.page
    assert "401" in page.inner_text("#server-status") and "incorrect API key" in page.inner_text("#server-status")
    page.click("#complete-submit")
    page.wait_for_selector("#complete-error:not([hidden])")
    assert page.inner_text("#complete-error") == "401: incorrect API key"
    wrong.shoot("error-key")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#complete-model option[value=tiny]", state="attached")
    page.fill("#prompt", "word " * 200)  # longer than the context of 128
    page.click("#complete-submit")
    expect(page.locator("#complete-error")).to_contain_text("context")
    assert page.inner_text("#complete-error").startswith("400 (prompt): ")
    page.context.close()
    assert wrong.errors == []


def test_keyboard_only_and_every_control_labelled(visit: Visit, site: Site) -> None:
    page = visit.page
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
             .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
             .map(el => el.id || el.outerHTML)"""
    )
    assert unlabelled == []
    page.focus("#tab-complete")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-chat"
    assert page.is_visible("#page-chat") and page.is_hidden("#page-complete")
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.id") == "tab-finetune"
    page.keyboard.press("Home")
    assert page.is_visible("#page-complete")
    page.focus("#prompt")
    page.keyboard.type("The sky")
    settings(page, temperature=0, max_tokens=4)
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#complete-usage:has-text('finish')")
    assert page.inner_text("#completion") == "The sky" + greedy(site, "The sky", 4)


def test_fine_tune_upload_train_watch_and_chat_with_the_result(visit: Visit, site: Site, tmp_path: Path) -> None:
    page = visit.page
    visit.tab("finetune")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "c"\n')
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report.error")
    report = page.inner_text("#upload-report")
    assert report.startswith("bad.jsonl was not uploaded: bad.jsonl:2: not valid JSON")
    assert site.client.files.list().data == []  # nothing was kept

    rows = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a, b in ((1, 2), (3, 4), (5, 1), (2, 2), (4, 3))]
    good = tmp_path / "sums.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page.set_input_files("#upload-file", str(good))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report:has-text('uploaded as file-')")
    uploaded = site.client.files.list().data
    assert [f.filename for f in uploaded] == ["sums.jsonl"]
    assert page.input_value("#job-training") == uploaded[0].id
    page.fill("#job-epochs", "3")
    page.fill("#job-batch", "2")
    page.fill("#job-lr", "30")
    page.fill("#job-suffix", "sums")
    page.fill("#job-seed", "5")
    page.click("#job-start")
    page.wait_for_selector("#job-view:not([hidden])")
    job_id = page.inner_text("#job-id")
    page.wait_for_selector("#loss-chart polyline.train", timeout=JOB_MS)  # drawn from the first step on
    visit.shoot("finetune-running")
    page.wait_for_selector("#job-status.succeeded", timeout=JOB_MS)

    job = site.client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.fine_tuned_model == page.get_attribute("#job-try-chat", "data-model")
    steps = [e for e in site.client.fine_tuning.jobs.list_events(job_id, limit=100) if e.type == "metrics"]
    assert int(page.get_attribute("#loss-chart", "data-points") or 0) == len(steps) >= 6
    assert page.locator("#job-events li").first.inner_text().endswith("The job has successfully completed")
    checkpoints = site.client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert page.locator("#checkpoints-table tbody tr").count() == len(checkpoints) >= 1
    page.wait_for_selector(f"#jobs-table code:has-text('{job_id}')")
    visit.shoot("finetune")

    page.reload()  # the job is still there after a reload
    page.wait_for_selector("#job-status.succeeded")
    assert page.inner_text("#job-id") == job_id
    page.click("#job-try-chat")
    assert page.is_visible("#page-chat") and page.input_value("#chat-model") == job.fine_tuned_model
    settings(page, temperature=0, max_tokens=4)
    page.fill("#chat-input", "Q: 1+2=")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#messages li.assistant")
    wait_idle(page, "chat-stop")
    messages: list[Any] = [{"role": "user", "content": "Q: 1+2="}]
    want = site.client.chat.completions.create(
        model=job.fine_tuned_model, messages=messages, max_tokens=4, temperature=0
    )
    assert page.inner_text("#messages li.assistant .content") == want.choices[0].message.content
    tiny = site.client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
    assert want.choices[0].message.content != tiny.choices[0].message.content  # the job changed the model
    visit.shoot("chat-finetuned")


def test_fine_tune_cancel_and_delete_from_the_lists(visit: Visit, site: Site, tmp_path: Path) -> None:
    page = visit.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete ...?"
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} ", "completion": f" {i + 1}"}) + "\n" for i in range(40)))
    file = site.client.files.create(file=("long.jsonl", data.read_bytes()), purpose="fine-tune")
    visit.tab("finetune")
    page.wait_for_selector(f"#files-table code:has-text('{file.id}')")
    page.select_option("#job-training", file.id)
    page.fill("#job-epochs", "50")  # 2,000 steps: far longer than the test
    page.fill("#job-batch", "1")
    page.click("#job-start")
    page.wait_for_selector("#job-status.running", timeout=JOB_MS)
    job_id = page.inner_text("#job-id")
    page.click("#job-cancel")
    page.wait_for_selector("#job-status.cancelled", timeout=JOB_MS)
    assert site.client.fine_tuning.jobs.retrieve(job_id).status == "cancelled"
    expect(page.locator("#job-cancel")).to_be_disabled()

    row = page.locator("#files-table tbody tr", has_text=file.id)
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert file.id not in [f.id for f in site.client.files.list().data]
    tuned = [m.id for m in site.client.models.list().data if m.id.startswith("ft:")]
    for model in tuned:  # the fine-tuned models of earlier tests, deleted from the Models list
        page.locator("#models-table tbody tr", has_text=model).get_by_role("button", name="Delete").click()
        expect(page.locator("#models-table tbody tr", has_text=model)).to_have_count(0)
    assert [m.id for m in site.client.models.list().data] == ["tiny"]
