"""hwlearn: build a handwritten word recognizer without labeled data.

The library API is imported lazily, so ``import hwlearn`` stays cheap (no torch import) until a
name that needs it is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "HwlearnError": "errors",
    "Charset": "charset",
    "DEFAULT_CHARSET": "charset",
    "CorpusStats": "corpus",
    "WordSampler": "corpus",
    "load_default_corpus": "corpus",
    "FontInfo": "fonts",
    "FontLibrary": "fonts",
    "RenderStyle": "render",
    "Renderer": "render",
    "contact_sheet": "render",
    "SyntheticWords": "synth",
    "build_synthetic": "synth",
    "write_dataset": "synth",
    "ModelConfig": "model",
    "PRESETS": "model",
    "Recognizer": "model",
    "create_model": "model",
    "greedy_decode": "decode",
    "beam_search": "decode",
    "Lexicon": "decode",
    "lexicon_decode": "decode",
    "charlm_decode": "decode",
    "CharLM": "charlm",
    "sequence_confidence": "decode",
    "Prediction": "decode",
    "decode_batch": "decode",
    "cer": "metrics",
    "wer": "metrics",
    "score": "metrics",
    "load_image": "data",
    "to_model_input": "data",
    "read_labels": "data",
    "scan_images": "data",
    "image_problem": "data",
    "load_labeled": "data",
    "check_labeled": "data",
    "LabeledImages": "data",
    "UnlabeledImages": "data",
    "collate": "data",
    "WidthBucketSampler": "data",
    "augment_real": "data",
    "augment_real_strong": "data",
    "Layout": "layout",
    "LAYOUTS": "layout",
    "rank_fonts": "fontmatch",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_train_state": "checkpoint",
    "list_checkpoints": "checkpoint",
    "prune_checkpoints": "checkpoint",
    "TrainConfig": "train",
    "Trainer": "train",
    "Source": "train",
    "ValSet": "train",
    "predict": "inference",
    "AdaptConfig": "selftrain",
    "adapt": "selftrain",
    "pretrain": "recipes",
    "finetune": "recipes",
    "adapt_folder": "recipes",
    "evaluate": "recipes",
    "recognize": "recipes",
    "iter_recognize": "recipes",
    "load_lexicon": "recipes",
    "load_charlm": "recipes",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwlearn' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
