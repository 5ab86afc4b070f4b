"""Retrieval, zero-shot and calibration metrics (paper Tables 2–3, Fig. 3)."""

from eval.metrics.calibration import f1_curve, frame_labels
from eval.metrics.retrieval import retrieval_metrics
from eval.metrics.zeroshot import class_prompts, zeroshot_metrics

__all__ = ["class_prompts", "f1_curve", "frame_labels", "retrieval_metrics", "zeroshot_metrics"]
