"""Tests of art_diffpure.metrics.law: the sigmoid compression law of Fig. 3b."""
from __future__ import annotations

import json

import numpy as np
import pytest

from art_diffpure import metrics as M
from art_diffpure.metrics.law import _logistic


@pytest.mark.parametrize("model,params", [("logistic4", dict(a=0.45, k=18.0, c0=0.3, b=0.02)),
                                          ("logistic3", dict(a=0.5, k=12.0, c0=0.35))])
def test_fit_compression_law_recovers_parameters(model, params):
    c = np.linspace(0.05, 0.8, 14)
    y = _logistic(c, params["a"], params["k"], params["c0"], params.get("b", 0.0))
    fit = M.fit_compression_law(c, y, model=model)
    for key, value in params.items():
        assert fit.params[key] == pytest.approx(value, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(0.3) == pytest.approx(float(_logistic(0.3, **params)), rel=1e-6)
    assert fit.predict([0.1, 0.2]).shape == (2,)
    json.dumps(fit.to_dict())
    noisy = y + np.random.RandomState(0).normal(0, 0.005, y.shape)
    assert M.fit_compression_law(c, noisy, model=model).params["c0"] == pytest.approx(params["c0"], abs=0.03)


@pytest.mark.parametrize("call,match", [
    (lambda: M.fit_compression_law([0.1, 0.2, 0.3], [0.1, 0.2]), "compression rates"),
    (lambda: M.fit_compression_law([0.1, 0.2], [0.1, 0.2], model="logistic3"), "at least 3 points"),
    (lambda: M.fit_compression_law([0.1] * 4, [0.1] * 4, model="tanh"), "Unknown model"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
