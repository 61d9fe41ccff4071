"""The one ART classifier builder (art_diffpure.models.classifier.art_classifier)."""
from __future__ import annotations

import numpy as np
import torch

from conftest import make_purifier, tiny_classifier

from art_diffpure.models.classifier import art_classifier


def test_builder_defaults_and_defence_order(images):
    from art.defences.preprocessor import FeatureSqueezing

    model = tiny_classifier().train()
    plain = art_classifier(model, (1, 8, 8), 10, device_type="cpu")
    assert not model.training  # put in eval mode
    assert plain.input_shape == (1, 8, 8) and plain.nb_classes == 10
    assert tuple(plain.clip_values) == (0.0, 1.0) and not plain.preprocessing_defences
    assert isinstance(plain._loss, torch.nn.CrossEntropyLoss)
    with torch.no_grad():
        np.testing.assert_allclose(plain.predict(images), model(torch.from_numpy(images)).numpy(), atol=1e-6)

    purifier = make_purifier(t_star=2, seed=0)
    smoothing = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4)
    defended = art_classifier(model, [1, 8, 8], 10, purifier=purifier, other_defences=[smoothing],
                              device_type="cpu", clip_values=(0.0, 1.0))
    assert defended.preprocessing_defences == [smoothing, purifier]  # the other defences run first
    assert art_classifier(model, (1, 8, 8), 10, purifier=purifier, device_type="cpu").preprocessing_defences == [
        purifier]
