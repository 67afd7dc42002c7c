"""Evaluation of pretrained backbones: configs, the pretrained export, linear probes, k-NN, fine-tuning."""
