"""The Chomsky-hierarchy task suite (Delétang et al. 2023, "Neural Networks and the Chomsky
Hierarchy", ICLR; also used by Ruoss et al. 2023, randomized positional encodings).

The length of an instance is the length of its input sequence. The paper's default split: train on
lengths drawn uniformly from 1..40, test on lengths 41..500. Where the paper pads an output with a
termination token and zeros, lengen's EOS is the termination token and there is no padding.
"""
