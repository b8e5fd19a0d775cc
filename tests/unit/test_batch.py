"""Batch transcription's core: chunk packing, time mapping, segments and job order."""

from __future__ import annotations

import pytest

from pipeline.core.batch import BatchPlan, Chunk, ChunkPacker, Piece, plan_chunks, segments_from_words

SR = 16000


def s(seconds: float) -> int:
    return int(round(seconds * SR))


# -- packing -----------------------------------------------------------------------


def test_utterances_are_packed_up_to_the_chunk_limit_with_short_gaps():
    spans = [(s(0), s(10)), (s(15), s(25)), (s(40), s(50)), (s(52), s(60))]
    chunks = plan_chunks(spans, max_chunk_s=29.0, max_gap_s=0.5)
    assert [c.index for c in chunks] == [0, 1]
    first, second = chunks
    # 10 s + 0.5 s of the real pause + 10 s; the third utterance would pass 29 s.
    assert first.pieces == [Piece(0, s(0), s(10)), Piece(s(10), s(14.5), s(25))]
    assert first.length == s(20.5)
    # A new chunk starts with its utterance, no lead-in; a 2 s pause is cut to 0.5 s.
    assert second.pieces == [Piece(0, s(40), s(50)), Piece(s(10), s(51.5), s(60))]
    assert all(c.length <= s(29) for c in chunks)


def test_a_pause_shorter_than_the_gap_is_kept_whole():
    chunks = plan_chunks([(s(0), s(3)), (s(3.2), s(6))], 29.0, 0.5)
    assert chunks[0].pieces[1] == Piece(s(3), s(3), s(6))  # starts at the previous end, not before it


def test_an_utterance_longer_than_a_chunk_is_cut():
    chunks = plan_chunks([(s(0), s(70))], 29.0, 0.3)
    assert [(c.start, c.end) for c in chunks] == [(0, s(29)), (s(29), s(58)), (s(58), s(70))]


def test_packing_as_utterances_arrive_matches_packing_at_once():
    spans = [(s(i * 7), s(i * 7 + 5)) for i in range(20)]
    packer = ChunkPacker(29.0, 0.3)
    streamed = [c for a, b in spans for c in packer.add(a, b)] + packer.flush()
    assert [(c.index, c.pieces) for c in streamed] == [(c.index, c.pieces) for c in plan_chunks(spans, 29.0, 0.3)]
    assert packer.flush() == []


def test_no_speech_gives_no_chunks():
    assert plan_chunks([], 29.0, 0.3) == []


# -- times -------------------------------------------------------------------------


def chunk_of_two() -> Chunk:
    # File 10-12 s, then 20-23 s with its 0.3 s lead-in: chunk times 0-2 s and 2-5.3 s.
    return Chunk(0, [Piece(0, s(10), s(12)), Piece(s(2), s(19.7), s(23))])


def test_chunk_times_map_back_to_the_file():
    chunk = chunk_of_two()
    assert chunk.file_time(0.5) == pytest.approx(10.5)
    assert chunk.file_time(2.3) == pytest.approx(20.0)
    assert chunk.file_time(5.3) == pytest.approx(23.0)
    assert chunk.file_time(9.0) == pytest.approx(23.0)  # past the end: clamped into the last piece


def test_segments_follow_utterances_and_carry_file_times():
    words = [
        {"word": "Hello", "start": 0.1, "end": 0.6, "probability": 0.9},
        {"word": "there.", "start": 0.6, "end": 1.4, "probability": 0.9},
        {"word": "General", "start": 2.4, "end": 3.0, "probability": 0.8},
        {"word": "Kenobi!", "start": 3.0, "end": 3.9, "probability": 0.8},
    ]
    segments = segments_from_words(chunk_of_two(), words)
    assert [x["text"] for x in segments] == ["Hello there.", "General Kenobi!"]
    assert segments[0]["start"] == pytest.approx(10.1) and segments[0]["end"] == pytest.approx(11.4)
    assert segments[1]["start"] == pytest.approx(20.1) and segments[1]["end"] == pytest.approx(21.6)
    assert [w["word"] for w in segments[1]["words"]] == ["General", "Kenobi!"]


def test_a_long_utterance_is_split_after_a_sentence_or_at_the_cue_limit():
    chunk = Chunk(0, [Piece(0, 0, s(29))])
    words = [{"word": f"w{i}" + ("." if i == 9 else ""), "start": i * 0.5, "end": i * 0.5 + 0.4, "probability": 1.0}
             for i in range(50)]
    segments = segments_from_words(chunk, words, max_segment_s=10.0)
    assert segments[0]["words"][-1]["word"] == "w9."  # a sentence end after >= 10/3 s closes a cue
    assert all(x["end"] - x["start"] <= 10.0 for x in segments)
    assert sum(len(x["words"]) for x in segments) == 50


# -- job order -----------------------------------------------------------------------


def chunks(n: int) -> list[Chunk]:
    return [Chunk(i, [Piece(0, s(30 * i), s(30 * i + 20))]) for i in range(n)]


def test_each_chunk_waits_for_the_text_before_it_and_gets_it_as_prompt():
    plan = BatchPlan(parallel=1, prompt_chars=300)
    plan.add(0, chunks(3))
    ((f, c, prompt),) = plan.take()
    assert (f, c.index, prompt) == (0, 0, "")
    assert plan.take() == []  # one in flight at most
    plan.done(0, 0, "first part.")
    ((_, c, prompt),) = plan.take()
    assert (c.index, prompt) == (1, "first part.")
    plan.done(0, 1, "second part.")
    ((_, c, prompt),) = plan.take()
    assert (c.index, prompt) == (2, "first part. second part.")
    plan.done(0, 2, "end.")
    assert plan.finished(0) and plan.idle


def test_prompts_are_cut_to_their_length_from_the_end():
    plan = BatchPlan(parallel=1, prompt_chars=10)
    plan.add(0, chunks(2))
    plan.take()
    plan.done(0, 0, "a long text that ends here")
    ((_, _, prompt),) = plan.take()
    assert prompt == "a long text that ends here"[-10:]


def test_other_files_fill_the_workers_before_a_file_is_split():
    plan = BatchPlan(parallel=2)
    plan.add(0, chunks(4))
    plan.add(1, chunks(4))
    sent = [(f, c.index) for f, c, _ in plan.take(allow_split=True)]
    assert sent == [(0, 0), (1, 0)]
    assert plan.splits == 0


def test_a_lone_file_is_split_only_when_allowed_and_the_split_part_has_no_prompt():
    plan = BatchPlan(parallel=2)
    plan.add(0, chunks(6))
    assert [(f, c.index) for f, c, _ in plan.take(allow_split=False)] == [(0, 0)]
    ((f, c, prompt),) = plan.take(allow_split=True)
    assert (f, c.index, prompt) == (0, 3, "") and plan.splits == 1
    # Both halves then run on: 0 -> 1 -> 2 and 3 -> 4 -> 5.
    plan.done(0, 3, "three")
    ((_, c, prompt),) = plan.take()
    assert (c.index, prompt) == (4, "three")
    plan.done(0, 0, "zero")
    ((_, c, prompt),) = plan.take()
    assert (c.index, prompt) == (1, "zero")
    for i in (1, 4):
        plan.done(0, i, str(i))
        plan.take()
    plan.done(0, 2, "2")
    plan.done(0, 5, "5")
    assert plan.take() == [] and plan.finished(0)
    assert [plan.files[0].texts[i] for i in range(6)] == ["zero", "1", "2", "three", "4", "5"]


def test_chunks_found_later_extend_the_running_chain():
    plan = BatchPlan(parallel=1)
    plan.add(0, [], complete=False)
    assert plan.take() == []
    plan.extend(0, chunks(1), complete=False)
    ((_, c, _),) = plan.take()
    assert c.index == 0
    plan.done(0, 0, "zero")
    assert not plan.finished(0)  # more chunks may come
    plan.extend(0, chunks(2)[1:], complete=True)
    ((_, c, prompt),) = plan.take()
    assert (c.index, prompt) == (1, "zero")
    plan.done(0, 1, "one")
    assert plan.finished(0) and plan.idle


def test_a_failed_chunk_fails_its_file_once_the_rest_is_back_and_others_go_on():
    plan = BatchPlan(parallel=2)
    plan.add(0, chunks(4))
    plan.add(1, chunks(1))
    plan.take(allow_split=True)
    plan.failed(0, 0, "worker lost")
    assert plan.files[0].error and "worker lost" in plan.files[0].error
    assert plan.finished(0)
    # Nothing more of file 0 is sent; file 1 carries on.
    assert plan.take() == []
    plan.done(1, 0, "fine")
    assert plan.finished(1) and plan.idle


def test_answers_to_chunks_not_out_are_recognised_as_stale():
    plan = BatchPlan(parallel=1)
    plan.add(0, chunks(2))
    plan.take()
    assert plan.is_out(0, 0) and not plan.is_out(0, 1)
    plan.done(0, 0, "x")
    assert not plan.is_out(0, 0)


def test_a_file_with_no_chunks_is_finished_at_once():
    plan = BatchPlan(parallel=2)
    plan.add(0, [], complete=True)
    assert plan.take() == [] and plan.finished(0)
