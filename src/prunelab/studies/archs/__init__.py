"""Architectures on MNIST and MNIST-1D: the MLP, LeNet-5, a ResNet and an LSTM as graphs of
prunable parts (study.py: declaration; run.py: train, sweep, compact, time; compare.py: table,
figure, section)."""
