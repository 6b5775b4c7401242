"""Train and evaluate MER under a stated protocol; leaves numbers, pictures and a Hub-ready model folder.

    python train.py                               # the demo: bundled corpus, small encoders, CPU, minutes
    python train.py examples/configs/demo.yaml    # the same from a config file (JSON or YAML)
    python train.py --cv loso --ablation          # every fold, with the standard ablation rows
    python train.py examples/configs/iemocap_base.yaml --corpus_path /data/IEMOCAP_full_release
"""

import logging
import sys
from pathlib import Path

from transformers import HfArgumentParser

from modeling_mer.training.arguments import DataArguments, MERTrainingArguments, ModelArguments
from modeling_mer.training.experiment import run


def parse_arguments(argv):
    parser = HfArgumentParser((ModelArguments, DataArguments, MERTrainingArguments))
    if argv and Path(argv[0]).suffix in (".json", ".yaml", ".yml"):
        # A config file, optionally followed by --flags that override it.
        import yaml

        values = yaml.safe_load(Path(argv[0]).read_text())
        flags = [item for key, value in values.items() for item in (f"--{key}", str(value))]
        argv = flags + list(argv[1:])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        run(model_args, data_args, training_args)
    except KeyboardInterrupt:
        # One line instead of a traceback through the Trainer; 130 = 128 + SIGINT, what shells report for Ctrl-C.
        print(f"\nInterrupted. Rerun the same command with --resume_from_checkpoint last to continue from the last "
              f"complete checkpoint in {training_args.output_dir}.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
