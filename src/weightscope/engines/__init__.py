"""Training engines that reproduce the seed program: pure float32 numpy, or real TensorFlow."""
