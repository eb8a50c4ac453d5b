"""datasources: ``--data`` from image folders, text + tokenizer.json, WAV files and loader scripts.

Each source is its own plugin (its own entry point), written as a third party would write one: it implements
``onnxopt_open_dataset`` and returns None for a source it does not claim. Options travel in the source string,
``PATH?key=value,key=value`` (:mod:`.source`), because the host passes a source nothing but shapes, seed and
batch size. Decoded data streams feed by feed (:mod:`.stream`), so a folder of 50 000 images is never in
memory at once.
"""
