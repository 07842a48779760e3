"""Where images come from: one module per source, each returning `RawImages` in its source order.

- `synthetic`: seeded, CIFAR-shaped, learnable data made here (no files).
- `local`: a copy on disk (`data.dir`), a folder or an archive (`..files`), auto-detected as one of
  - `python_batches`: the CIFAR-10 python batches (`cifar-10-batches-py`), or
  - `image_tree`: an image-folder tree (`train/<class>/*`, `test/<class>/*`, PNG or JPEG).
- `tfds`: tensorflow-datasets, prepared once into `<cache>/tfds`.

Order matters: the report's `split="tail"` (validation = the last `val_size` training images) assumes
the source order of the python batches. Each module's docstring says its order and whether it is the
report's. A new source is one module here plus one branch in `netspec.data.load_raw`.
"""
