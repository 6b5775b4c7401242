"""segmentation_mer: hysteresis, both detectors on a conversation with known boundaries, streaming reads, word
alignment, bad segments and words."""

import numpy as np
import pytest
import soundfile
import torch
from tiny_folders import write_wav

from modeling_mer.audio_io_mer import load_audio
from modeling_mer.data import load_demo
from modeling_mer.data.conversation import boundary_hits, make_conversation, spread_words
from modeling_mer.segmentation_mer import (
    AudioStream,
    VADSettings,
    assign_words,
    check_segments,
    check_words,
    detect_speech,
    frame_levels_db,
    load_silero,
    resolve_vad,
    silero_available,
    silero_scores,
    speech_regions,
)

SR = 16_000
needs_silero = pytest.mark.skipif(not silero_available(), reason="silero-vad not installed (pip install silero-vad)")


@pytest.fixture(scope="module")
def conversation():
    # 40 demo utterances (sessions and classes mixed) joined by 0.3-1.5 s pauses with white noise at -50 dBFS.
    return make_conversation(load_demo(), range(3, 1000, 25), seed=1)


def truth(conversation):
    return [(utterance["start"], utterance["end"]) for utterance in conversation.utterances]


def as_seconds(regions):
    return [(start / SR, end / SR) for start, end in regions]


# ------------------------------------------------------------------ hysteresis (frames of 160 samples = 10 ms)


def test_speech_regions_hysteresis_minimum_lengths_and_padding():
    settings = VADSettings(threshold=0.5, neg_threshold=0.3, min_speech_seconds=0.05, min_silence_seconds=0.03,
                           pad_seconds=0.01)
    scores = np.zeros(100)
    scores[10:20] = 0.9          # speech
    scores[20:22] = 0.1          # a 2-frame dip: shorter than 3 frames of silence, stays one region
    scores[22:30] = 0.9
    scores[30:34] = 0.4          # between the thresholds: neither starts nor ends speech
    scores[34:40] = 0.0          # silence long enough: the region ends where it began, frame 34
    scores[50:53] = 0.9          # 3 frames < 5 frames minimum: dropped
    scores[60:70] = 0.9
    scores[70:72] = 0.0
    scores[72:80] = 0.9          # silence from frame 80 on ends it
    regions = speech_regions(scores, 160, 100 * 160, settings)
    # Unpadded: frames [10, 34) and [60, 80); padded by 10 ms = 160 samples on each side.
    assert regions == [(10 * 160 - 160, 34 * 160 + 160), (60 * 160 - 160, 80 * 160 + 160)]


def test_padding_stops_halfway_to_the_neighbour_and_at_the_edges():
    settings = VADSettings(min_speech_seconds=0.01, min_silence_seconds=0.01, pad_seconds=0.1)  # pad = 10 frames
    scores = np.zeros(40)
    scores[1:10] = 1.0
    scores[14:38] = 1.0  # speech until 2 frames before the end
    assert speech_regions(scores, 160, 40 * 160, settings) == [(0, 12 * 160), (12 * 160, 40 * 160)]


def test_speech_running_to_the_end_is_closed():
    scores = np.ones(50)
    assert speech_regions(scores, 160, 50 * 160 - 7, VADSettings(pad_seconds=0)) == [(0, 50 * 160 - 7)]


def test_frame_levels_match_a_direct_computation():
    samples = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    levels = frame_levels_db(samples, 160)
    expected = [10 * np.log10(np.mean(samples[i:i + 160].astype(np.float64) ** 2) + 1e-12) for i in range(0, 1000, 160)]
    np.testing.assert_allclose(levels, expected, rtol=1e-9)


# ------------------------------------------------------------------ detectors on a conversation with known truth


def test_energy_boundaries_within_0_15_s(conversation):
    found = as_seconds(detect_speech(AudioStream(conversation.waveform), vad="energy"))
    hits = boundary_hits(found, truth(conversation), tolerance=0.15)
    assert hits >= 0.95 * len(conversation.utterances), (hits, len(found))
    assert len(found) <= 1.1 * len(conversation.utterances)  # not found by splitting everything up


@needs_silero
def test_silero_boundaries_within_0_15_s(conversation):
    found = as_seconds(detect_speech(AudioStream(conversation.waveform), vad="silero"))
    hits = boundary_hits(found, truth(conversation), tolerance=0.15)
    assert hits >= 0.95 * len(conversation.utterances), (hits, len(found))
    assert len(found) <= 1.1 * len(conversation.utterances)


@needs_silero
def test_silero_blocks_change_nothing(conversation):
    # State is carried across blocks: 1.024 s blocks give exactly the scores of 30 s blocks.
    stream = AudioStream(conversation.waveform[: 6 * SR])
    model = load_silero()
    np.testing.assert_array_equal(silero_scores(stream, 2 * 512 * 16, model), silero_scores(stream, 30 * SR, model))


@needs_silero
def test_importing_silero_keeps_torch_threads():
    threads = torch.get_num_threads()
    load_silero()
    assert torch.get_num_threads() == threads


def test_silero_missing_is_a_clear_error(monkeypatch):
    import modeling_mer.segmentation_mer as segmentation

    monkeypatch.setattr(segmentation, "silero_available", lambda: False)
    assert segmentation.resolve_vad("auto") == "energy"
    with pytest.raises(ImportError, match="pip install silero-vad"):
        segmentation.resolve_vad("silero")
    with pytest.raises(ValueError, match="vad must be one of"):
        resolve_vad("webrtc")


# ------------------------------------------------------------------ streaming reads


def test_stream_reads_a_16k_file_in_pieces(tmp_path):
    audio = np.random.default_rng(1).standard_normal(SR * 3 + 17).astype(np.float32) * 0.1
    path = write_wav(tmp_path / "a.wav", audio)
    stream = AudioStream(str(path))
    assert len(stream) == len(audio)
    np.testing.assert_array_equal(stream.read(12_345, 23_456), audio[12_345:23_456])
    pieces = list(stream.blocks(SR))
    assert [offset for offset, _ in pieces] == [0, SR, 2 * SR, 3 * SR]
    np.testing.assert_array_equal(np.concatenate([piece for _, piece in pieces]), audio)


def test_stream_resamples_pieces_like_the_whole_file(tmp_path):
    rng = np.random.default_rng(2)
    stereo = (rng.standard_normal((44_100 * 2, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "b.wav"
    soundfile.write(path, stereo, 44_100, subtype="FLOAT")
    whole = load_audio(str(path))
    stream = AudioStream(str(path))
    assert len(stream) == len(whole)
    for start, stop in ((0, 5000), (7777, 20_001), (30_000, len(whole))):
        np.testing.assert_allclose(stream.read(start, stop), whole[start:stop], atol=1e-5)


def test_stream_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="input: audio file not found"):
        AudioStream(str(tmp_path / "missing.wav"))
    (tmp_path / "junk.wav").write_bytes(b"not audio" * 20)
    with pytest.raises(ValueError, match="could not decode"):
        AudioStream(str(tmp_path / "junk.wav"))


# ------------------------------------------------------------------ user segments and words


def test_assign_words_by_overlap_then_nearest():
    segments = [(0, 2 * SR), (3 * SR, 5 * SR)]
    words = check_words([
        {"word": "a", "start": 0.1, "end": 0.5},
        {"word": "b", "start": 1.8, "end": 3.1},    # overlaps the first by 0.2 s, the second by 0.1 s
        {"word": "c", "start": 2.6, "end": 2.8},    # in the pause, nearer the second
        {"word": "d", "start": 4.0, "end": 4.2},
        {"word": "e", "start": 5.2, "end": 5.4},    # just after the last segment
        {"word": "f", "start": 6.0, "end": 6.2},    # 1.1 s after it: in no segment
    ])
    assert [[word["word"] for word in group] for group in assign_words(words, segments)] == [["a", "b"],
                                                                                          ["c", "d", "e"]]


def test_spread_words_cover_the_utterance():
    words = spread_words("one two three", 1.0, 2.5)
    assert [(w["start"], w["end"]) for w in words] == [(1.0, 1.5), (1.5, 2.0), (2.0, 2.5)]


def test_check_segments():
    assert check_segments([(1.0, 2.0), (0.0, 0.5)], 3.0, 60) == [(0, 8000), (16_000, 32_000)]
    for bad, match in (([], "non-empty"), ([(1, 0.5)], "segment 0"), ([(0, 4.0)], "recording's length"),
                       ([(0, 1), (0.5, 2)], "overlap"), ([(0, 0.001)], "receptive field"), ([(0, "1")], "segment 0")):
        with pytest.raises(ValueError, match=match):
            check_segments(bad, 3.0, 60)


def test_check_words():
    assert [w["word"] for w in check_words([{"word": "b", "start": 1, "end": 2}, {"word": "a", "start": 0, "end": 1}])] \
        == ["a", "b"]
    for bad in ("text", [{"word": "a", "start": 0}], [{"word": 1, "start": 0, "end": 1}],
                [{"word": "a", "start": 2, "end": 1}]):
        with pytest.raises(ValueError, match="word"):
            check_words(bad)
