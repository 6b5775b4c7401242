import io
import re
from collections import Counter

import datasets
import numpy as np
import pytest
import soundfile as sf

from modeling_mer.data.demo import DEMO_CORPUS_PATH, DEMO_LABEL_NAMES, load_demo

README = DEMO_CORPUS_PATH.parent / "README.md"
CONDITIONS = ("neutral", "words", "prosody", "both")
# Written independently of the generator's templates: any of these makes a sentence emotional ("get" as in "get out").
EMOTION_WORDS = {
    "happy",
    "wonderful",
    "love",
    "great",
    "delighted",
    "laugh",
    "glad",
    "miss",
    "lonely",
    "sorry",
    "lost",
    "cried",
    "cry",
    "sad",
    "unhappy",
    "alone",
    "empty",
    "hate",
    "stupid",
    "get",
    "ruined",
    "furious",
    "idiot",
    "disgrace",
    "shut",
    "sick",
}
EMOTIONAL_VOICE_QUALITY = {"happy": "bright", "sad": "breathy", "angry": "harsh"}


@pytest.fixture(scope="module")
def demo():
    return load_demo()


@pytest.fixture(scope="module")
def rows(demo):
    return demo.remove_columns("audio").to_pandas()


def documented_counts():
    """The label x condition table that the generator wrote into data/demo_corpus/README.md."""
    counts = {}
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == len(CONDITIONS) + 2 and cells[0] in DEMO_LABEL_NAMES:
            counts.update(
                {(cells[0], condition): int(n) for condition, n in zip(CONDITIONS, cells[1:-1], strict=True)}
            )
    return counts


def words_of(text):
    return set(re.findall(r"[a-z]+", text.lower()))


def test_features_follow_the_iemocap_4class_convention(demo):
    assert demo.features["label"] == datasets.ClassLabel(names=["neutral", "happy", "sad", "angry"])
    assert demo.features["audio"] == datasets.Audio(sampling_rate=16000, decode=False)
    for column in (
        "id",
        "text",
        "session",
        "speaker",
        "gender",
        "condition",
        "duration",
        "pitch",
        "rate",
        "volume",
    ):
        assert column in demo.column_names
    assert len(set(demo["id"])) == len(demo)


def test_counts_match_the_readme(rows):
    documented = documented_counts()
    assert len(documented) == len(DEMO_LABEL_NAMES) * len(CONDITIONS)
    actual = Counter(
        zip(rows["label"].map(lambda index: DEMO_LABEL_NAMES[index]), rows["condition"], strict=True)
    )
    assert {key: actual.get(key, 0) for key in documented} == documented
    assert sum(documented.values()) == len(rows)
    assert 900 <= len(rows) <= 1100


def test_five_sessions_of_two_voices(rows):
    assert sorted(rows["session"].unique()) == [1, 2, 3, 4, 5]
    for session, group in rows.groupby("session"):
        assert sorted(group["speaker"].unique()) == [f"demo_s{session}_F", f"demo_s{session}_M"]
        assert sorted(group["gender"].unique()) == ["F", "M"]
    # Every speaker has every class, so each leave-one-session-out test fold is complete.
    assert (rows.groupby("speaker")["label"].nunique() == len(DEMO_LABEL_NAMES)).all()


def test_sentences_vary(rows):
    assert rows["text"].nunique() > 200
    assert rows["text"].value_counts().max() <= 10


def test_condition_decides_where_the_emotion_is(rows):
    emotional_text = rows["text"].map(lambda text: bool(words_of(text) & EMOTION_WORDS))
    carries_words = rows["condition"].isin(["words", "both"])
    assert (emotional_text == carries_words).all()

    neutral_voice = rows["condition"].isin(["neutral", "words"])
    assert (rows.loc[neutral_voice, "voice_quality"] == "modal").all()
    assert (rows.loc[neutral_voice, "pitch_range"] == "medium").all()
    emotional_voice = rows[~neutral_voice]
    expected_quality = emotional_voice["label"].map(
        lambda index: EMOTIONAL_VOICE_QUALITY[DEMO_LABEL_NAMES[index]]
    )
    assert (emotional_voice["voice_quality"] == expected_quality).all()


def test_words_condition_is_spoken_with_neutral_prosody(rows):
    # Per speaker, "words" utterances stay inside the jitter band of that speaker's neutral utterances,
    # while the mean of each emotion's "prosody" utterances leaves it.
    for _, group in rows.groupby("speaker"):
        neutral = group[group["condition"] == "neutral"]
        words = group[group["condition"] == "words"]
        for parameter in ("pitch", "rate", "volume"):
            # 25 neutral draws span most of the uniform jitter band; a quarter of it on each side covers the rest.
            low, high = neutral[parameter].min(), neutral[parameter].max()
            low, high = low - (high - low) / 4, high + (high - low) / 4
            assert words[parameter].between(low, high).all(), parameter
        prosody = group[group["condition"] == "prosody"].groupby("label")[["pitch", "rate", "volume"]].mean()
        spread = neutral[["pitch", "rate", "volume"]].std()
        shift = (prosody - neutral[["pitch", "rate", "volume"]].mean()).abs() / spread
        assert (shift.max(axis=1) > 3).all()


def test_audio_decodes_with_soundfile_at_16khz(demo, rows):
    for example, duration in zip(
        demo.cast_column("audio", datasets.Audio(decode=False))["audio"], rows["duration"], strict=True
    ):
        info = sf.info(io.BytesIO(example["bytes"]))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
        assert info.frames / 16000 == pytest.approx(duration, abs=1e-3)
    waveform, sampling_rate = sf.read(io.BytesIO(demo[0]["audio"]["bytes"]), dtype="float32")
    assert sampling_rate == 16000 and waveform.ndim == 1
    assert 0.001 < np.sqrt(np.mean(waveform**2)) and np.abs(waveform).max() < 1.0


def test_durations_are_short_and_sane(rows):
    assert rows["duration"].between(0.7, 3.0).all()
    assert 1.0 <= rows["duration"].mean() <= 2.5


def test_shipped_file_is_small():
    assert DEMO_CORPUS_PATH.stat().st_size <= 20 * 1024 * 1024


def test_missing_file_says_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_demo_corpus.py"):
        load_demo(tmp_path / "absent.parquet")
