"""The paper's reference numbers (Liu & Wei 2025, CIFAR-10 unless said), shown beside ours in the report."""
from __future__ import annotations

import numpy as np

from art_diffpure._utils import norm_label

__all__ = ["PAPER"]

_L2, _LINF = norm_label(2), norm_label(np.inf)

# The paper's CIFAR-10 numbers (Liu & Wei 2025), shown beside ours for reference; ImageNet's at the end.
PAPER = {
    "table1": {"ddpm": {_L2: (1.077, 3.641), _LINF: (0.031, 0.316), "ssim": (0.965, 0.796), "fid": (0.226, 0.120)},
               "reverse": {_L2: (1.149, 3.078), _LINF: (0.031, 0.270), "ssim": (0.965, 0.837), "fid": (0.209, 0.183)},
               "ddim": {_L2: (1.080, 2.810), _LINF: (0.031, 0.242), "ssim": (0.964, 0.869), "fid": (0.234, 0.104)}},
    "table2": {"stochastic": {"clean": "86.0±0.8%", "pgd": "71.9±0.2%", "pgd_eot": "59.3%"},
               "aligned": {"clean": "85.8±0.4%", "pgd": "23.7±0.7%", "pgd_eot": "–"}},
    "table4": "77.4±0.36%",
    "table5": {"fixed_vs_fixed": "0.0818±0.0709", "eot_vs_fixed": "0.1682±0.0976"},
    "table6": {"ddpm": ("0.798±0.124", "0.989±0.201", "0.231±0.046", "23.7%"),
               "reverse": ("0.738±0.106", "0.864±0.151", "0.195±0.046", "34.9%"),
               "ddim": ("0.717±0.119", "0.815±0.140", "0.281±0.048", "10.9%")},
    "table7": {"t": (10, 20, 50, 100, 150, 200, 300),
               "ddpm": {"compress": (0.552, 0.420, 0.299, 0.231, 0.201, 0.187, 0.185),
                        "pgd_fix": (0.001, 0.010, 0.086, 0.237, 0.353, 0.395, 0.402)},
               "reverse": {"compress": (0.461, 0.355, 0.248, 0.195, 0.177, 0.174, 0.200),
                           "pgd_fix": (0.006, 0.035, 0.185, 0.349, 0.430, 0.465, 0.426)}},
    "tableS5": {"total": "3.597±0.877", "input": "0.020±0.005", "internal": "3.578±0.873", "snr": "5.926±1.065"},
    "tableS6": {"initial": "1.004±0.001", "vary_input_fixed_xi": "0.241±0.032",
                "vary_xi_fixed_input": "3.282±0.453", "vary_both": "3.288±0.453"},
    "fig3a": {"frac_below": 0.90, "frac_above": 0.013},
    # ImageNet (Table 3: clean, BPDA, BPDA-EOT; Table S2: the BPDA distances along DiffPure)
    "table3": {"stochastic": ("67.2±2.4%", "63.7±1.2%", "59.0%"), "aligned": ("68.5±0.8%", "29.5±0.4%", "–")},
    "tableS2": "l2 3.537 → 61.116 → 17.712; linf 0.016 → 0.832 → 0.422.",
}

