"""What every model family does on an accelerator: uint8 pixels staged in pinned host memory
and copied without blocking, normalised (and, for images decoded there, oriented, resized
and cropped) on the device; JPEG decoding on the GPU (nvJPEG, through torchvision, imported
only on that path); CUDA graphs for the fixed-shape image batch. The same torch code runs on
the CPU, which is how the tests check it where no GPU is."""
