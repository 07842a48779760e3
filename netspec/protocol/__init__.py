"""What the core asks of a backend: the protocol, the model base, optimizer state names, the random stream, augmentation draws."""
