"""The GPUs domtok knows: dense bf16 peak FLOP/s and memory, one table for the MFU of training
logs and benchmarks (`domtok.train.common.mfu`) and for the smoke's projections. Torch-free, so
the CLI can list the choices without importing torch."""

from __future__ import annotations

# name -> (dense bf16 peak FLOP/s, memory GB); matched against a device name in this order
# ("L40S" before "L4", which it contains)
GPUS = {"H200": (989e12, 141), "H100": (989e12, 80), "A100": (312e12, 80), "L40S": (362e12, 48),
        "4090": (165e12, 24), "A10G": (125e12, 24), "L4": (121e12, 24), "3090": (71e12, 24)}
H100_PCIE_PEAK = 756e12  # the PCIe H100 runs at lower clocks than the SXM part


def peak_flops_by_name(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU a CUDA device name describes; None if it is not listed."""
    name = device_name.lower()
    if "h100" in name and "pcie" in name:
        return H100_PCIE_PEAK
    for key, (flops, _) in GPUS.items():
        if key.lower() in name:
            return flops
    return None
