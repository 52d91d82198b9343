"""StackGAN v1 and v2 (StackGAN++): text-conditional (and unconditional) stacked generators."""
