"""The model workshop: the reference ranker, its training, export, quantization and checks.

torch is an optional extra (``rankgate[train]``) needed only by ``models.ranker``,
``models.train`` and ``models.export``; everything else here runs on numpy and
onnxruntime, like the proxy. See models/README.md.
"""
