"""Generate the bundled demo corpus: synthetic speech where emotion lives in the words, the voice, or both.

Install and run (Debian/Ubuntu; the Python side needs numpy, soundfile and pyarrow from the venv):

    apt-get install -y espeak-ng sox
    python scripts/make_demo_corpus.py --seed 0

It writes `modeling_mer/data/demo_corpus/demo_corpus.parquet` (16 kHz mono 16-bit FLAC bytes per row) and
`modeling_mer/data/demo_corpus/README.md` (the design and the class/condition counts that tests/test_demo.py checks).
The same seed, espeak-ng and sox versions give the same corpus.

Why it looks like this: fusion has to have something to prove. Every emotional utterance carries its
emotion in the words only (spoken with neutral prosody), in the prosody only (emotionally neutral
words), or in both; neutral utterances have neutral words and neutral prosody. Per speaker and
emotion there are 11 "words", 11 "prosody" and 3 "both" utterances, so a perfect text-only model
recalls 14/25 of each emotion (and all of neutral): UA = (1 + 3 * 0.56) / 4 = 0.67; a perfect
prosody-only model likewise; only a model using both can reach 100 %.
"""

import argparse
import io
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

LABEL_NAMES = ("neutral", "happy", "sad", "angry")  # the IEMOCAP 4-class order
SAMPLING_RATE = 16000
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "modeling_mer" / "data" / "demo_corpus"

# Two voices per session, a higher "F" and a lower "M" one, each a different espeak-ng accent and
# variant, so that leave-one-session-out tests on voices never heard in training.
SPEAKERS = (
    # session, gender, espeak-ng voice, base pitch (espeak -p, 0-99), base rate (words/min)
    (1, "F", "en-us+f1", 68, 190),
    (1, "M", "en-us+m1", 36, 186),
    (2, "F", "en-gb+f2", 72, 184),
    (2, "M", "en-gb+m3", 30, 192),
    (3, "F", "en-gb-scotland+f3", 64, 188),
    (3, "M", "en-gb-x-gbclan+m2", 40, 182),
    (4, "F", "en-029+f4", 75, 195),
    (4, "M", "en-us-nyc+m4", 28, 188),
    (5, "F", "en-gb-x-rp+f5", 66, 186),
    (5, "M", "en-gb-x-gbcwmd+m6", 38, 190),  # not m7: its muffled high formants sound like the "breathy" sad effect
)

# Emotional prosody as offsets from a speaker's neutral voice. The effects are large (the speech
# encoder of the demo trains from scratch) but jittered, and "voice quality" is a sox effect chain.
PROSODY = {
    # label: pitch offset, rate factor, volume (dB), SSML pitch range, voice quality
    "neutral": (0, 1.00, 0.0, "medium", "modal"),
    "happy": (20, 1.20, 4.0, "x-high", "bright"),
    "sad": (-18, 0.78, -8.0, "x-low", "breathy"),
    "angry": (6, 1.15, 9.0, "high", "harsh"),
}
VOICE_QUALITY_EFFECTS = {
    "modal": [],
    "bright": ["treble", "+6", "3000"],
    "breathy": ["lowpass", "1800", "tremolo", "5", "20"],
    "harsh": ["overdrive", "14", "10"],
}
# Per-utterance jitter, applied to every utterance (neutral ones too), so no single value identifies a class.
PITCH_JITTER, RATE_JITTER, VOLUME_JITTER_DB = 4, 0.06, 1.5
EMOTION_STRENGTH = (0.75, 1.1)  # an emotional utterance scales its offsets by a factor from this range
REFERENCE_RMS_DBFS = -36.0  # low enough that an angry +10 dB utterance does not clip; quiet FLAC is small
# Every voice is band-limited to 4.5 kHz: espeak-ng's noisy highs cost ~25 % of the FLAC bytes and carry
# no emotion here, and the shipped file must stay under 20 MB.
BANDWIDTH_HZ = 4500

# Per speaker: 25 neutral, and per emotion 11 words-only, 11 prosody-only, 3 both -> 100 utterances.
NEUTRAL_PER_SPEAKER = 25
CONDITIONS_PER_EMOTION = {"words": 11, "prosody": 11, "both": 3}

# Sentences: slot words are shared by all classes, so only the emotion words tell the class apart.
# Every sentence ends with "." and has no comma, because espeak-ng gives "!", "?" and "," their own
# intonation and pauses, which would leak emotion into the prosody of a "words" utterance; emotional and
# neutral sentences have about the same length for the same reason (duration is a prosodic cue).
SLOTS = {
    "obj": "lamp chair folder bottle jacket notebook phone key umbrella table box pencil ticket letter bag".split(),
    "place": "kitchen office hallway garage station library corner shelf window desk garden basement".split(),
    "name": "Anna David Maria John Laura Peter Sarah Tom Emma Mark".split(),
    "day": "Monday Tuesday Wednesday Thursday Friday Sunday".split(),
    "time": "nine ten noon six eight seven".split(),
}
TEMPLATES = {
    "neutral": [
        "The {obj} is on the {place}.",
        "{name} took the {obj} on {day}.",
        "We meet in the {place} at {time}.",
        "Please put the {obj} by the {place}.",
        "I will call {name} on {day}.",
        "{name} bought a new {obj}.",
        "There is a {obj} in the {place}.",
        "The {obj} was in the {place}.",
        "{name} works near the {place}.",
        "The bus leaves at {time} on {day}.",
    ],
    "happy": [
        "I am happy about the {obj}.",
        "What a wonderful {day} with {name}.",
        "I love the new {obj} so much.",
        "{name} has great news for us.",
        "I am delighted with the {place}.",
        "{name} made me laugh so much.",
        "The {obj} is just wonderful.",
        "I am so glad {name} is here.",
    ],
    "sad": [
        "I miss {name} so much.",
        "I feel lonely in the {place}.",
        "I am sorry I lost the {obj}.",
        "{name} left me and I cried.",
        "The {place} feels empty and sad.",
        "I am so unhappy since {day}.",
        "I am all alone on {day}.",
        "The old {obj} makes me cry.",
    ],
    "angry": [
        "I hate this stupid {obj}.",
        "Get out of my {place} now.",
        "{name} ruined my {obj} again.",
        "I am furious with {name}.",
        "Stop touching my {obj} you idiot.",
        "This {place} is a disgrace.",
        "Shut up about the stupid {obj}.",
        "I am sick of {name}.",
    ],
}


def sample_sentence(rng, label):
    template = TEMPLATES[label][rng.integers(len(TEMPLATES[label]))]
    fills = {slot: words[rng.integers(len(words))] for slot, words in SLOTS.items()}
    return template.format(**fills)


def jitter_prosody(rng, speaker, prosody_label):
    """Draw one utterance's espeak/sox parameters: the speaker's voice, moved by the emotion, plus jitter."""
    _, _, _, base_pitch, base_rate = speaker
    pitch_offset, rate_factor, volume_db, pitch_range, quality = PROSODY[prosody_label]
    strength = rng.uniform(*EMOTION_STRENGTH) if prosody_label != "neutral" else 1.0
    pitch = base_pitch + strength * pitch_offset + rng.uniform(-PITCH_JITTER, PITCH_JITTER)
    rate = base_rate * (1 + strength * (rate_factor - 1)) * (1 + rng.uniform(-RATE_JITTER, RATE_JITTER))
    volume = strength * volume_db + rng.uniform(-VOLUME_JITTER_DB, VOLUME_JITTER_DB)
    return {
        "pitch": int(round(np.clip(pitch, 0, 99))),
        "rate": int(round(rate)),
        "volume": round(float(volume), 2),
        "pitch_range": pitch_range,
        "voice_quality": quality,
    }


def plan_speaker(rng, speaker):
    """The rows of one speaker, without audio: which words, which prosody, which condition."""
    session, gender = speaker[0], speaker[1]
    # (label, condition, which class the words come from, which class the prosody comes from)
    plan = [("neutral", "neutral", "neutral", "neutral")] * NEUTRAL_PER_SPEAKER
    for label in LABEL_NAMES[1:]:
        for condition, count in CONDITIONS_PER_EMOTION.items():
            words = label if condition in ("words", "both") else "neutral"
            prosody = label if condition in ("prosody", "both") else "neutral"
            plan += [(label, condition, words, prosody)] * count
    rows = []
    for index, plan_index in enumerate(rng.permutation(len(plan))):
        label, condition, words, prosody = plan[plan_index]
        rows.append(
            {
                "id": f"demo_s{session}_{gender}_{index:03d}",
                "text": sample_sentence(rng, words),
                "label": LABEL_NAMES.index(label),
                "session": session,
                "speaker": f"demo_s{session}_{gender}",
                "gender": gender,
                "condition": condition,
                "voice": speaker[2],
                **jitter_prosody(rng, speaker, prosody),
            }
        )
    return rows


def synthesize(row):
    """espeak-ng -> sox (voice quality, silence trim, 16 kHz) -> loudness set in numpy -> FLAC bytes."""
    ssml = f'<speak><prosody range="{row["pitch_range"]}">{row["text"]}</prosody></speak>'
    espeak = subprocess.run(
        [
            "espeak-ng",
            "-m",
            "-v",
            row["voice"],
            "-p",
            str(row["pitch"]),
            "-s",
            str(row["rate"]),
            "--stdout",
            ssml,
        ],
        check=True,
        capture_output=True,
    )
    # Float output and -D (no dither) keep sox deterministic and free of clipping until we scale.
    trim = ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"]
    sox = subprocess.run(
        [
            "sox",
            "-V1",
            "-D",
            "-t",
            "wav",
            "-",
            "-t",
            "f32",
            "-r",
            str(SAMPLING_RATE),
            "-c",
            "1",
            "-",
            *VOICE_QUALITY_EFFECTS[row["voice_quality"]],
            "sinc",
            f"-{BANDWIDTH_HZ}",
            *trim,
            "pad",
            "0.05",
            "0.05",
        ],
        input=espeak.stdout,
        check=True,
        capture_output=True,
    )
    waveform = np.frombuffer(sox.stdout, dtype=np.float32).astype(np.float64)
    rms = np.sqrt(np.mean(waveform**2)) + 1e-12
    target_rms = 10 ** ((REFERENCE_RMS_DBFS + row["volume"]) / 20)
    waveform = waveform * (target_rms / rms)
    peak = np.abs(waveform).max()
    if peak > 0.99:  # rare: keep the waveform intact rather than clip it
        waveform *= 0.99 / peak
    pcm = np.round(waveform * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue(), len(pcm) / SAMPLING_RATE


def count_table(rows):
    """Markdown table of class x condition counts, the numbers tests/test_demo.py checks."""
    counts = Counter((LABEL_NAMES[row["label"]], row["condition"]) for row in rows)
    conditions = ("neutral", "words", "prosody", "both")
    lines = ["| label | " + " | ".join(conditions) + " | total |", "|---" * (len(conditions) + 2) + "|"]
    for label in LABEL_NAMES:
        cells = [counts[(label, condition)] for condition in conditions]
        lines.append(f"| {label} | " + " | ".join(map(str, cells)) + f" | {sum(cells)} |")
    totals = [sum(counts[(label, condition)] for label in LABEL_NAMES) for condition in conditions]
    lines.append("| total | " + " | ".join(map(str, totals)) + f" | {len(rows)} |")
    return "\n".join(lines)


def write_readme(rows, path, seed):
    durations = [row["duration"] for row in rows]
    text = f"""# Demo corpus

Synthetic English speech (espeak-ng + sox), generated by `scripts/make_demo_corpus.py --seed {seed}`.
{len(rows)} utterances, {len({row["text"] for row in rows})} distinct sentences, 4 classes in the IEMOCAP
4-class order (neutral, happy, sad, angry), 5 sessions x 2 voices (`demo_s<session>_<F|M>`), so
leave-one-session-out folds are speaker-independent. Durations {min(durations):.2f}-{max(durations):.2f} s
(mean {np.mean(durations):.2f} s). Audio: 16 kHz mono 16-bit FLAC bytes in the `audio` column.

## Design: what fusion has to prove

Each emotional utterance carries its emotion in one of three ways (`condition`):

- `words`: emotional words ("I hate this stupid lamp."), spoken with the speaker's neutral prosody;
- `prosody`: emotionally neutral words ("The lamp is on the desk."), spoken with emotional pitch,
  pitch range, rate, loudness and voice quality (happy: high, wide, fast, bright; sad: low, flat,
  slow, quiet, breathy; angry: loud, fast, harsh), each jittered;
- `both`: emotional words with emotional prosody.

Neutral utterances have neutral words and neutral prosody. A perfect text-only model therefore
recalls only the `words` + `both` share of each emotion, and a perfect prosody-only model only the
`prosody` + `both` share: both top out near UA = 2/3. Only a model that uses both modalities can
approach 100 %. The generation parameters are kept in the columns `pitch` (espeak-ng -p), `rate`
(words per minute), `volume` (dB relative to a fixed reference level), `pitch_range`,
`voice_quality` and `voice`.

Check the ceilings with `PYTHONPATH=. python benchmarks/demo_corpus_ceiling.py` (bag-of-words text model,
prosodic-statistics audio model, session 5 held out). Caveat: emotion words also sound different
(angry ones have more /s/ and /t/), so an audio model that learns the words themselves can recall
some `words` utterances from audio alone and pass 2/3 a little; the prosody of those utterances is
neutral by construction (see the `pitch`, `rate`, `volume` columns).

## Counts (label x condition)

{count_table(rows)}

Licence: generated here from espeak-ng output; no recorded human speech.
"""
    path.write_text(text)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEMO_DIR / "demo_corpus.parquet")
    parser.add_argument("--workers", type=int, default=2, help="parallel espeak-ng/sox processes")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    rows = [row for speaker in SPEAKERS for row in plan_speaker(rng, speaker)]
    with ThreadPoolExecutor(args.workers) as pool:
        audio = list(pool.map(synthesize, rows))
    for row, (flac_bytes, duration) in zip(rows, audio, strict=True):
        row["audio"] = {"bytes": flac_bytes, "path": f"{row['id']}.flac"}
        row["duration"] = round(duration, 3)

    columns = [
        "id",
        "audio",
        "text",
        "label",
        "session",
        "speaker",
        "gender",
        "condition",
        "duration",
        "pitch",
        "rate",
        "volume",
        "pitch_range",
        "voice_quality",
        "voice",
    ]
    table = pa.Table.from_pylist([{name: row[name] for name in columns} for row in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out, compression="zstd")
    write_readme(rows, args.out.parent / "README.md", args.seed)
    print(f"{len(rows)} utterances, {args.out.stat().st_size / 1e6:.1f} MB -> {args.out}")
    print(count_table(rows))


if __name__ == "__main__":
    main()
