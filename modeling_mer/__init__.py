"""mer: multimodal (speech + text) emotion recognition with focus-attention crossmodal transformers.

The files next to this one are what a Hub checkpoint carries (flat, linked by `from .x import Y`); this
`__init__` only re-exports them and registers the classes with the Auto factories for local use.
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
