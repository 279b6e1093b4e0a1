"""Batched prediction: per-batch results equal one forward of the model, and no mode leaks to the caller."""

import numpy as np
import torch

from archsim.labels import compact_labels, predicted_labels
from archsim.models import create_model
from archsim.transfer import predict
from archsim.transfer.stages import predict_stream


def _linear_model(tmp_path, classes=5):
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, classes)), tmp_path / "linear.pt")
    return create_model(f"file:{tmp_path / 'linear.pt'},input_size=3:4:4")


def test_streamed_batches_equal_one_forward_and_leave_no_mode_behind(tmp_path):
    model = _linear_model(tmp_path)
    images = torch.randint(0, 256, (11, 3, 4, 4), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(images.float() / 255)
    batches = [images[:4], images[4:8], images[8:]]
    stream = predict_stream(model, iter(batches))
    first = next(stream)
    # The caller between two batches runs in its own mode: autograd still works there.
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    rest = list(stream)
    assert [len(b) for b in [first, *rest]] == [4, 4, 3]
    assert torch.allclose(torch.cat([first, *rest]), expected, atol=1e-6)
    labels = torch.cat(list(predict_stream(model, iter(batches), reduce=lambda logits: logits.argmax(-1))))
    assert torch.equal(labels, expected.argmax(-1)) and torch.allclose(predict(model, images, 3), expected, atol=1e-6)
    assert list(predict_stream(model, iter([]))) == []


def test_labels_are_compact_and_equal_numpys_argmax():
    logits = np.random.default_rng(0).standard_normal((3, 20, 7)).astype(np.float32)
    logits.flags.writeable = False  # as a memory-mapped run result is
    assert np.array_equal(predicted_labels(logits), logits.argmax(-1)) and predicted_labels(logits).dtype == np.int16
    assert (
        compact_labels(np.array([0, 32767])).dtype == np.int16
        and compact_labels(np.array([0, 32768])).dtype == np.int32
    )
    assert compact_labels(np.array([40000, 3])).tolist() == [40000, 3]
