"""RobustBench classifiers (art_diffpure.models.robustbench) behind a purifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def test_robustbench_helper_loads_local_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from art_diffpure.models.robustbench import import_robustbench, robustbench_art_classifier

    import_robustbench()
    from robustbench.model_zoo.cifar10 import cifar_10_models
    from robustbench.model_zoo.enums import ThreatModel

    # The paper's classifier: RobustBench's 'Standard' WideResNet-28-10, random weights saved in its layout.
    name = "Standard"
    torch.manual_seed(0)
    reference = cifar_10_models[ThreatModel.Linf][name]["model"]().eval()
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "cifar10" / "Linf" / f"{name}.pt")
    classifier = robustbench_art_classifier(name, model_dir=str(tmp_path), device_type="cpu")
    x = np.random.RandomState(0).rand(2, 3, 32, 32).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.tensor(x)).numpy()
    np.testing.assert_allclose(classifier.predict(x), expected, atol=1e-5)


def test_robustbench_missing_checkpoint_is_clear(tmp_path):
    from art_diffpure.models.robustbench import load_robustbench_model

    with pytest.raises(FileNotFoundError, match="Standard.pt"):
        load_robustbench_model("Standard", model_dir=str(tmp_path))


def test_unknown_dataset_is_refused(tmp_path):
    from art_diffpure.models.robustbench import robustbench_art_classifier

    with pytest.raises(ValueError, match="Unknown dataset"):
        robustbench_art_classifier("Standard", dataset="mnist", model_dir=str(tmp_path))
