"""Public import path of the config: `from configuration_mer import MERConfig`."""

from modeling_mer.configuration_mer import IEMOCAP_4CLASS_LABELS, MERConfig

__all__ = ["IEMOCAP_4CLASS_LABELS", "MERConfig"]
