"""Transfer: attack + evaluate, cached by content."""

from archsim.transfer.stages import (
    PROVENANCE,
    TransferResult,
    adv_key,
    pred_key,
    predict,
    run_transfer,
)

__all__ = ["PROVENANCE", "TransferResult", "run_transfer", "predict", "adv_key", "pred_key"]
