"""Data kinds: one module each, registering what follows from a kind of data (genlab.registry.DataKind).

    image      8x8 digits, MNIST and friends, CIFAR-10, image folders and .npz files
    text       characters, bytes or BPE tokens of a corpus, in windows
    music      note events of chorales or MIDI files
    pianoroll  88-key frames of JSB Chorales

A new kind is one module here (or anywhere, for a plugin) that calls `register_data_kind`;
genlab.registry lists the built-in ones.
"""
