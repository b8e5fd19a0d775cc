"""The page at `/` in real headless Chromium, its microphone fed with JFK, the real model."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from tests.data import JFK, JFK_TEXT
from tests.helpers import timeout
from tests.system.test_pipeline import RunningPipeline

pytestmark = pytest.mark.system
normalize = EnglishTextNormalizer()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_DIR = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def fake_microphone(path: Path) -> Path:
    """JFK as Chromium's fake capture wants it: a 16-bit WAV, with silence around it."""
    from faster_whisper.audio import decode_audio

    audio = decode_audio(str(JFK), sampling_rate=48000)
    audio = np.concatenate([np.zeros(48000, np.float32), audio, np.zeros(48000 * 3, np.float32)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_transcribes_the_microphone(tmp_path):
    from playwright.sync_api import sync_playwright

    wav = fake_microphone(tmp_path / "jfk-mic.wav")
    pipeline = RunningPipeline(tmp_path)
    try:
        page_url = pipeline.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ])
            try:
                page = browser.new_page(viewport={"width": 900, "height": 520})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(page_url)
                assert page.title() == "Live transcription"
                page.click("#toggle")
                page.wait_for_function("document.querySelector('#status').textContent === 'listening'",
                                       timeout=timeout(30) * 1000)
                # The meter moves with the level messages while JFK speaks.
                page.wait_for_function("parseFloat(document.querySelector('#meter > div').style.width) > 20",
                                       timeout=timeout(30) * 1000)
                # Until a final reaches the end of the speech (10.6 s): each shows "mm:ss.s → mm:ss.s".
                page.wait_for_function(
                    "[...document.querySelectorAll('#finals .final')].some(p => (t => +t[0] * 60 + +t[1])("
                    "p.firstChild.textContent.split('→')[1].trim().split(':')) > 9.5)",
                    timeout=timeout(60) * 1000)
                page.click("#toggle")  # stop: the last finals, then "stopped"
                page.wait_for_function("document.querySelector('#status').textContent === 'idle'",
                                       timeout=timeout(30) * 1000)
                finals = page.evaluate("[...document.querySelectorAll('#finals .final')]"
                                       ".map(p => [p.firstChild.textContent, p.lastChild.textContent])")
                SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT_DIR / "browser-jfk.png"))
                assert not page.locator("#copy").is_disabled() and not page.locator("#download").is_disabled()
                with page.expect_download() as download:
                    page.click("#download")
                saved = Path(download.value.path()).read_text()
                assert errors == []
            finally:
                browser.close()
    finally:
        pipeline.stop()
    text = " ".join(said for _, said in finals)
    assert jiwer.wer(normalize(JFK_TEXT), normalize(text)) <= 0.15, finals
    assert all(" → " in when for when, _ in finals)  # each final shows its times
    assert jiwer.wer(normalize(JFK_TEXT), normalize(saved)) <= 0.15, saved  # the download holds it all
    assert (SCREENSHOT_DIR / "browser-jfk.png").stat().st_size > 10_000
