"""mer: multimodal (speech + text) emotion recognition with focus-attention crossmodal transformers.

The `*_mer.py` files beside this one are what a Hub checkpoint carries: flat, importing only torch,
transformers, numpy and the standard library, linked by `from .x import Y`. What never ships lives apart:
`data/` (corpora, folds, collator, samplers), `training/` (arguments, Trainer, cache, cross-validation,
reports) and `cli.py` (console scripts). This `__init__` re-exports the shipped classes and registers them
with the Auto factories for local use.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

from .configuration_mer import IEMOCAP_4CLASS_LABELS, MERConfig
from .modeling_mer import MERForSequenceClassification, MERModel, MERPreTrainedModel
from .pipeline_mer import MERPipeline  # registers the multimodal-emotion-recognition task
from .processing_mer import MERProcessor

AutoConfig.register("mer", MERConfig, exist_ok=True)
AutoModel.register(MERConfig, MERModel, exist_ok=True)
AutoModelForSequenceClassification.register(MERConfig, MERForSequenceClassification, exist_ok=True)
AutoModelForAudioClassification.register(MERConfig, MERForSequenceClassification, exist_ok=True)
AutoProcessor.register(MERConfig, MERProcessor, exist_ok=True)

__all__ = [
    "IEMOCAP_4CLASS_LABELS",
    "MERConfig",
    "MERForSequenceClassification",
    "MERModel",
    "MERPipeline",
    "MERPreTrainedModel",
    "MERProcessor",
]
