"""Transfer: attack + evaluate, cached by content."""

from archsim.transfer.stages import (
    TransferResult,
    adv_key,
    pred_key,
    predict,
    run_transfer,
)

__all__ = ["TransferResult", "run_transfer", "predict", "adv_key", "pred_key"]
