"""First vs cached `load_iemocap` on a full-size IEMOCAP-format tree (5,531 4-class utterances).

Writes the tree in a temporary folder: the per-session class counts of docs/method.md §4, plus
the utterances the 4-class protocol drops (fru, xxx, sur, ...: about 4,500, as in the real release),
30 dialogs per session, tiny WAVs (50 ms). Target: the second load (a datasets cache hit) < 1 s.

Run from the repository root: PYTHONPATH=. python benchmarks/bench_load_cache.py
"""

import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from modeling_mer.data import load_iemocap

# session -> codes: neu, hap, exc, sad, ang (docs/method.md §4), then codes the 4-class protocol drops.
COUNTS = {
    1: {"neu": 384, "hap": 135, "exc": 143, "sad": 194, "ang": 229},
    2: {"neu": 362, "hap": 117, "exc": 210, "sad": 197, "ang": 137},
    3: {"neu": 320, "hap": 135, "exc": 151, "sad": 305, "ang": 240},
    4: {"neu": 258, "hap": 65, "exc": 238, "sad": 143, "ang": 327},
    5: {"neu": 384, "hap": 143, "exc": 299, "sad": 245, "ang": 170},
}
DROPPED_PER_SESSION = {"fru": 370, "xxx": 480, "sur": 20, "fea": 8, "dis": 1, "oth": 3}
DIALOGS_PER_SESSION = 30


def write_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(800)).astype(np.float32)  # 50 ms at 16 kHz
    for session, counts in COUNTS.items():
        codes = [c for code, n in {**counts, **DROPPED_PER_SESSION}.items() for c in [code] * n]
        rng.shuffle(codes)
        base = root / f"Session{session}"
        for folder in ("dialog/EmoEvaluation", "dialog/transcriptions"):
            (base / folder).mkdir(parents=True)
        for d, dialog_codes in enumerate(np.array_split(np.asarray(codes), DIALOGS_PER_SESSION)):
            kind = "impro" if d % 2 == 0 else "script"
            dialog = f"Ses{session:02d}{'FM'[d % 4 // 2]}_{kind}{d:02d}" + ("_1" if kind == "script" else "")
            labels, transcripts = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], []
            (base / "sentences" / "wav" / dialog).mkdir(parents=True)
            for i, code in enumerate(dialog_codes):
                utt = f"{dialog}_{'FM'[i % 2]}{i:03d}"
                labels += [f"[{i:.4f} - {i + 0.5:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.0000]",
                           "C-E1:\tNeutral;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
                transcripts.append(f"{utt} [{i:08.4f}-{i + 0.5:08.4f}]: words of utterance {i} [LAUGHTER]")
                sf.write(base / "sentences" / "wav" / dialog / f"{utt}.wav", wav, 16000, subtype="PCM_16")
            (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(labels) + "\n")
            (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcripts) + "\n")
    return root


def timed_load(root, cache):
    start = time.perf_counter()
    dataset = load_iemocap(root, cache_dir=cache)
    return dataset, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "IEMOCAP_full_release", Path(tmp) / "cache"
        start = time.perf_counter()
        write_tree(root)
        n_files = sum(1 for _ in root.rglob("*.wav"))
        print(f"wrote {n_files} WAVs in {time.perf_counter() - start:.1f} s")

        first, first_s = timed_load(root, cache)
        second, second_s = timed_load(root, cache)
        names = first.features["label"].names
        per_session = Counter(zip(first["session"], (names[i] for i in first["label"]), strict=True))
        for session in COUNTS:
            print(f"  session {session}: " + ", ".join(f"{c} {per_session[(session, c)]}" for c in names))
        print(f"rows: {len(first)} (expected 5531)")
        print(f"first load (parse + read {len(first)} WAV headers + write arrow): {first_s:.2f} s")
        print(f"second load, same process (cache hit): {second_s:.3f} s "
              f"[{'OK' if second_s < 1 else 'ABOVE TARGET'}: target < 1 s]")
        assert second.cache_files == first.cache_files

        # A fresh process, as when a training job is started again (imports not timed).
        code = ("import time; from modeling_mer.data import load_iemocap; t = time.perf_counter(); "
                f"load_iemocap({str(root)!r}, cache_dir={str(cache)!r}); print(time.perf_counter() - t)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        fresh_s = float(out.stdout.strip().splitlines()[-1])
        print(f"second load, new process (cache hit): {fresh_s:.3f} s "
              f"[{'OK' if fresh_s < 1 else 'ABOVE TARGET'}: target < 1 s]")


if __name__ == "__main__":
    main()
