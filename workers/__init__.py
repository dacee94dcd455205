"""isotune's training side: long-memory sequence tasks, gated RNNs initialized from the theory, and
the training loop that workers run."""
