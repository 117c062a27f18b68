# Jetson (meta-tegra): ONNX Runtime with the CUDA and TensorRT execution providers. The unit needs
# the GPU device nodes: install systemd/edgeinferd-gpu.conf.example as a drop-in.
PACKAGECONFIG ??= "ort cuda tensorrt"
