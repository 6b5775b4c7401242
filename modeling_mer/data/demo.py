"""The bundled demo corpus: 1,000 synthetic utterances where emotion is in the words, the voice, or both.

Made by `scripts/make_demo_corpus.py`; its design and counts are in `demo_corpus/README.md`. Training-side
code: the shipped model files never import it.
"""

from pathlib import Path

import datasets
import pyarrow.parquet as pq

from ..configuration_mer import IEMOCAP_4CLASS_LABELS, SAMPLING_RATE

DEMO_LABEL_NAMES = IEMOCAP_4CLASS_LABELS  # the demo uses the IEMOCAP 4-class set and order
DEMO_CORPUS_PATH = Path(__file__).resolve().parent / "demo_corpus" / "demo_corpus.parquet"


def load_demo(path=DEMO_CORPUS_PATH):
    """The demo corpus as a `datasets.Dataset`, audio left as FLAC bytes (`Audio(decode=False)`).

    Columns: id, audio {bytes, path}, text, label (ClassLabel), session (1-5), speaker, gender,
    condition (neutral/words/prosody/both), duration (s), and the generation parameters pitch, rate,
    volume, pitch_range, voice_quality, voice. Decode with soundfile: `sf.read(io.BytesIO(audio["bytes"]))`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo corpus not found at {path}; regenerate it with `python scripts/make_demo_corpus.py` "
            "(needs espeak-ng and sox) or reinstall the package, which ships it as package data"
        )
    # Read straight into memory: 20 MB at most, and no datasets cache to go stale when the file changes.
    dataset = datasets.Dataset(pq.read_table(path))
    dataset = dataset.cast_column("audio", datasets.Audio(sampling_rate=SAMPLING_RATE, decode=False))
    return dataset.cast_column("label", datasets.ClassLabel(names=list(DEMO_LABEL_NAMES)))
