import torch

# Test tensors are small: one thread avoids OpenMP spin-waits on busy machines.
torch.set_num_threads(1)
