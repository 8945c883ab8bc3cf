"""The shared kernel: typed config, errors, ids, clock, messages, interceptors and the store interface."""
