"""How a model trains on this machine: CPU threads, memory reuse, resumable and
distributed trainers, plain-data checkpoints."""
