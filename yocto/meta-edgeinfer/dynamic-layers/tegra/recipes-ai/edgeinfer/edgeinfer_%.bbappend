# Jetson (meta-tegra): ONNX Runtime with the CUDA and TensorRT execution providers. The unit needs
# the GPU device nodes: install systemd/edgeinferd-gpu.conf.example (also in edgeinfer-doc, under
# /usr/share/doc/edgeinfer/) as a drop-in.
PACKAGECONFIG ??= "ort cuda tensorrt"
