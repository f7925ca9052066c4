"""Training loops, checkpoints and run folders."""
