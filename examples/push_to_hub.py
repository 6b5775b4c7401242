"""Push a trained MER model folder to the Hub with its code, processor, pipeline registration and model card.

    python examples/push_to_hub.py runs/mer-iemocap your-name/mer-iemocap \\
        --base-model-text FacebookAI/roberta-base --base-model-audio facebook/wav2vec2-base \\
        --dataset-name IEMOCAP --protocol protocol.md --metrics-table results.md

Log in first (`hf auth login`) or set HF_TOKEN. Without --dataset-name, the folder's own README.md is pushed.
Afterwards anyone can run `pipeline(model="your-name/mer-iemocap", trust_remote_code=True)`.
"""

import argparse
from pathlib import Path

from modeling_mer.training.hub import push_model_to_hub


def text_or_file(value: str) -> str:
    """An argument that is either the text itself or the path of a file holding it."""
    path = Path(value)
    return path.read_text(encoding="utf-8") if path.is_file() else value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_folder", help="Folder a trained model and its MERProcessor were saved to.")
    parser.add_argument("repo_id", help="Hub repo to create or update, e.g. your-name/mer-iemocap.")
    parser.add_argument("--base-model-text", help="Hub id of the pretrained text encoder (for the card).")
    parser.add_argument("--base-model-audio", help="Hub id of the pretrained speech encoder (for the card).")
    parser.add_argument("--dataset-name", help="Training corpus, e.g. IEMOCAP; enables writing the card.")
    parser.add_argument("--protocol", default="", type=text_or_file,
                        help="Evaluation protocol prose (splits, folds, model selection), or a file holding it.")
    parser.add_argument("--metrics-table", default="", type=text_or_file,
                        help="A Markdown table of results (e.g. per-fold WA/UA), or a file holding it.")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    args = parser.parse_args(argv)

    card = None
    if args.dataset_name:
        card = dict(base_model_text=args.base_model_text, base_model_audio=args.base_model_audio,
                    dataset_name=args.dataset_name, protocol=args.protocol,
                    metrics_table_markdown=args.metrics_table, license=args.license)
        missing = [name for name, value in card.items() if not value]
        if missing:
            parser.error(f"with --dataset-name the card also needs: {', '.join(missing)}")
    url = push_model_to_hub(args.model_folder, args.repo_id, model_card_kwargs=card, private=args.private,
                            token=args.token)
    print(f"Pushed {args.model_folder} to {args.repo_id}: {url}")


if __name__ == "__main__":
    main()
