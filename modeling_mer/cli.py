"""`mer-predict`: emotions of audio files (with transcripts) from a trained MER model folder or Hub repo.

    mer-predict a.wav b.wav --text "first transcript" --text "second" --model FOLDER_OR_REPO [--json]
    mer-predict --manifest clips.csv --model FOLDER_OR_REPO --batch-size 8   # CSV columns: audio,text
    mer-predict --manifest clips.csv --model FOLDER --output preds.jsonl      # streamed, resumable
    accelerate launch --multi_gpu --num_processes 4 -m modeling_mer.cli --manifest clips.csv --model FOLDER --output preds.jsonl
    mer-predict talk.wav --model FOLDER_OR_REPO --timeline out.csv --words words.json [--plot timeline.png]

Training side (never shipped): the model itself loads through `pipeline(..., trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .configuration_mer import TASK

PROGRESS_MIN_ITEMS = 10  # a bar for a handful of files is noise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mer-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="*", help="Audio files (WAV, FLAC, OGG, MP3; any rate, mono or stereo).")
    parser.add_argument("--text", action="append", default=None,
                        help="Transcript of an audio file; give it once per file, in the same order. Without it "
                             "the transcript comes from --asr-model (or the model must be audio-only).")
    parser.add_argument("--model", required=True, help="A trained MER model folder or Hub repo id.")
    parser.add_argument("--manifest", type=Path,
                        help="CSV with an `audio` column (paths, relative to the CSV's folder) and an optional "
                             "`text` column (empty = transcribe).")
    parser.add_argument("--json", action="store_true", help="Print one JSON list instead of text lines.")
    parser.add_argument("--top-k", type=int, default=None, help="Only the k most likely emotions.")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Utterances per forward pass; 8 is ~1.5x faster than 1 on CPU (benchmarks/).")
    parser.add_argument("--asr-model", default=None,
                        help="Folder or Hub id of a speech recognizer for files without a transcript.")
    parser.add_argument("--max-audio-seconds", type=float, default=None,
                        help="Window length for long clips (default 30 s); window scores are averaged.")
    parser.add_argument("--timeline", type=Path, default=None,
                        help="One long recording -> CSV with one row per speech segment (start, end, text, label, "
                             "score, one column per class). Text from --words or --asr-model.")
    parser.add_argument("--words", type=Path, default=None,
                        help="With --timeline: JSON list of {word, start, end} (seconds) for the recording.")
    parser.add_argument("--vad", default="auto", choices=("auto", "silero", "energy"),
                        help="With --timeline: speech detector (auto = silero-vad when installed, else energy).")
    parser.add_argument("--plot", type=Path, default=None,
                        help="With --timeline: also draw the emotions over time under the waveform (PNG).")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if present).")
    parser.add_argument("--output", type=Path, default=None,
                        help="Write one JSON line per input to this .jsonl as results come (flushed each time) "
                             "instead of printing them. Rerunning skips the inputs already in it (keyed by audio "
                             "path + input index). Under `accelerate launch --num_processes N` each process takes "
                             "every N-th input and writes OUTPUT's stem + .rank{i}.jsonl.")
    return parser


def read_manifest(path: Path) -> list[dict]:
    # utf-8-sig: spreadsheet programs save CSVs with a byte-order mark, which would rename the first column.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "audio" not in rows[0]:
        raise ValueError(f"{path}: the manifest needs a header with an `audio` column (and optionally `text`).")
    items = []
    for number, row in enumerate(rows, start=1):
        if not (row["audio"] or "").strip():
            raise ValueError(f"{path}: row {number} (line {number + 1}) has an empty `audio` cell; every row needs "
                             "the path of its audio file.")
        audio = Path(row["audio"].strip())
        audio = audio if audio.is_absolute() else path.parent / audio
        items.append({"audio": str(audio), "text": (row.get("text") or "").strip() or None})
    return items


def collect_items(args) -> list[dict]:
    texts = args.text or []
    if texts and len(texts) != len(args.audio):
        raise ValueError(f"Got {len(args.audio)} audio files but {len(texts)} --text values; give one --text per "
                         "file, or none (then the transcripts come from --asr-model).")
    items = [{"audio": audio, "text": text} for audio, text in zip(args.audio, texts or [None] * len(args.audio),
                                                                    strict=True)]
    if args.manifest is not None:
        items += read_manifest(args.manifest)
    if not items:
        raise ValueError("No input: pass audio files and/or --manifest CSV.")
    return items


def longest_first(items: list[dict]) -> list[dict]:
    """The items by decreasing duration, each tagged with its input position.

    Batches of similar length need little padding (benchmarks/bench_pipeline.py), the longest batch comes
    first so an out-of-memory error shows at once, and files whose header cannot be read come before all
    others so their error stops the run before any work is done.
    """
    import soundfile

    def seconds(item):
        try:
            return soundfile.info(item["audio"]).duration
        except Exception:  # missing, unreadable or not audio: the pipeline raises the clear error
            return float("inf")

    tagged = [{**item, "position": position} for position, item in enumerate(items)]
    return sorted(tagged, key=seconds, reverse=True)


def _as_record(item: dict, result) -> dict:
    """One JSON record per input, whichever form the pipeline returned (a transcript comes back as a dict)."""
    if isinstance(result, dict):
        return {"audio": item["audio"], "text": result["transcript"], "transcribed": True, "scores": result["scores"]}
    return {"audio": item["audio"], "text": item["text"], "transcribed": False, "scores": result}


def format_record(record: dict) -> str:
    scores = ", ".join(f"{entry['label']} {entry['score']:.3f}" for entry in record["scores"])
    heard = f"  (transcribed: {record['text']!r})" if record["transcribed"] else ""
    return f"{record['audio']}: {scores}{heard}"


def check_model_source(model: str) -> None:
    """A --model that names a folder must exist: otherwise transformers reports a bad Hub repo id instead."""
    path = Path(model).expanduser()
    if path.is_dir():
        return
    looks_like_a_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model
    if looks_like_a_path or path.exists():
        raise FileNotFoundError(f"--model {model}: no such model folder. Pass the folder a training run wrote "
                                "(e.g. outputs/demo/model) or a Hub repo id (user/name).")


def predict(args, items: list[dict]):
    """Records in the order of `items`, each yielded as soon as its batch is done."""
    from tqdm.auto import tqdm
    from transformers import pipeline

    try:
        pipe = pipeline(TASK, model=args.model, trust_remote_code=True, device=args.device)
    except OSError as error:
        raise FileNotFoundError(f"--model {args.model}: not a local folder, and it could not be loaded as a Hub "
                                f"repo ({str(error).splitlines()[0]}).") from error
    options = {"batch_size": args.batch_size}
    for name in ("top_k", "asr_model", "max_audio_seconds"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    # A generator streams results back as batches finish, which is what the progress bar counts.
    results = pipe(iter([{"audio": item["audio"], "text": item["text"]} for item in items]), **options)
    bar = tqdm(results, total=len(items), unit="file", disable=len(items) < PROGRESS_MIN_ITEMS, file=sys.stderr)
    for item, result in zip(items, bar, strict=True):
        yield _as_record(item, result)


def record_key(record: dict) -> str:
    """Identity of an input across runs: its audio path and its index in the input list (the same file may be
    listed twice)."""
    return f"{record['index']}\t{record['audio']}"


def output_shards(output: Path) -> list[Path]:
    """Every file a run with --output OUTPUT may have written, whatever its process count."""
    return [output, *sorted(output.parent.glob(f"{output.stem}.rank*.jsonl"))]


def done_keys(output: Path) -> set[str]:
    """Keys of the inputs already answered in OUTPUT and its shards; a line cut short by a kill is ignored."""
    keys = set()
    for shard in output_shards(output):
        if not shard.exists():
            continue
        for line in shard.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(record_key(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return keys


def _drop_partial_line(path: Path) -> None:
    """A run killed mid-write leaves a line without its newline; cut it, or the next record would join it."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def process_shard():
    """(index, count, device, barrier) of this process under `accelerate launch`/torchrun; (0, 1, None, no-op)
    when run alone."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, None, lambda: None
    import torch
    from accelerate import PartialState

    # Without CUDA, PartialState() reports a single process unless told to use the CPU (gloo) backend.
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, str(state.device), state.wait_for_everyone


def predict_to_file(args, items: list[dict]) -> tuple[int, int, Path]:
    """Stream this process's share of the unanswered items to its .jsonl; returns (written, skipped, path)."""
    rank, world, device, barrier = process_shard()
    if args.device is None and device is not None:
        args.device = device  # one GPU per process
    path = args.output if world == 1 else args.output.with_name(f"{args.output.stem}.rank{rank}.jsonl")
    finished = done_keys(args.output)
    barrier()  # every process reads the same finished set before any writes, so the shards agree
    todo = [item for item in items if record_key(item) not in finished]
    # Each process takes every world-th unanswered input; errors name the input's index in the whole list.
    ordered = [{**item, "position": item["index"]} for item in longest_first(todo[rank::world])]
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        try:
            for item, record in zip(ordered, predict(args, ordered) if ordered else (), strict=True):
                record = {"index": item["index"], **record}
                handle.write(json.dumps(record, allow_nan=False) + "\n")
                handle.flush()  # a kill or Ctrl-C keeps every finished result
                written += 1
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(_name_item(str(error), ordered)) from error
    return written, len(items) - len(todo), path


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.timeline is not None or args.plot is not None or args.words is not None:
        return run_timeline(parser, args)
    items, written = [], 0
    try:
        check_model_source(args.model)
        collected = collect_items(args)
        if args.output is not None:
            items = [{**item, "index": index} for index, item in enumerate(collected)]
            written, skipped, path = predict_to_file(args, items)
            print(f"mer-predict: wrote {written} results to {path} ({skipped} already done)", file=sys.stderr)
            return 0
        items = longest_first(collected)
        records = list(predict(args, items))
    except KeyboardInterrupt:
        kept = f"; the finished results are in {args.output}" if args.output is not None else ""
        print(f"mer-predict: interrupted{kept}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Errors name the item ("item 3: ..."); map that back to the file the user typed.
        print(f"mer-predict: error: {_name_item(str(error), items)}", file=sys.stderr)
        return 2
    records = [record for _, record in sorted(zip((item["position"] for item in items), records, strict=True))]
    if args.json:
        print(json.dumps(records, indent=2, allow_nan=False))  # the pipeline refuses non-finite scores
    else:
        print("\n".join(format_record(record) for record in records))
    return 0


def run_timeline(parser, args) -> int:
    """`--timeline`: one recording -> a CSV of its speech segments (and optionally a plot)."""
    if args.timeline is None:
        parser.error("--words and --plot go with --timeline out.csv")
    if len(args.audio) != 1 or args.manifest is not None or args.text:
        parser.error("--timeline takes exactly one audio file, and its text from --words or --asr-model "
                     "(not --text or --manifest)")
    from transformers import pipeline

    try:
        words = json.loads(args.words.read_text(encoding="utf-8")) if args.words is not None else None
        pipe = pipeline(TASK, model=args.model, trust_remote_code=True, device=args.device)
        options = {"max_audio_seconds": args.max_audio_seconds} if args.max_audio_seconds is not None else {}
        timeline = pipe(args.audio[0], timeline=True, words=words, asr_model=args.asr_model, vad=args.vad,
                        batch_size=args.batch_size, **options)
    except (ValueError, FileNotFoundError, ImportError, json.JSONDecodeError) as error:
        print(f"mer-predict: error: {error}", file=sys.stderr)
        return 2
    labels = [pipe.model.config.id2label[index] for index in range(pipe.model.config.num_labels)]
    with open(args.timeline, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start", "end", "text", "label", "score", *labels])
        for entry in timeline:
            by_label = {score["label"]: score["score"] for score in entry["scores"]}
            writer.writerow([f"{entry['start']:.3f}", f"{entry['end']:.3f}", entry["text"], entry["label"],
                             f"{entry['score']:.4f}", *(f"{by_label[label]:.4f}" for label in labels)])
    if args.plot is not None:
        from .training.plots import plot_timeline

        plot_timeline(args.audio[0], timeline, labels, args.plot)
    print(f"{len(timeline)} speech segments -> {args.timeline}" + (f", {args.plot}" if args.plot else ""))
    return 0


def _name_item(message: str, items: list[dict]) -> str:
    """`items` in the order the pipeline saw them; the message names the file and its position on the command line."""
    prefix = message.split(":", 1)[0]
    if prefix.startswith("item ") and prefix[5:].isdigit() and int(prefix[5:]) < len(items):
        item = items[int(prefix[5:])]
        return f"{item['audio']} (item {item.get('position', int(prefix[5:]))}){message[len(prefix):]}"
    return message


if __name__ == "__main__":
    sys.exit(main())
