"""Serving configs for engines built by elfatt-deploy (docs/serving.md).

- ``engine_info``: an engine's tensors, profile and GPU, from its sidecar (or TensorRT for a bare plan).
- ``triton``: a Triton Inference Server model repository (``elfatt-deploy triton``).
- ``deepstream``: a DeepStream Gst-nvinfer ``[property]`` config (``elfatt-deploy deepstream``).
"""
